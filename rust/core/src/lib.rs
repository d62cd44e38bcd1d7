//! matgrad-core: the numerics of matgrad, with no Python in it.
//!
//! - [`gemm`]: a blocked, multi-threaded SIMD GEMM on strided matrices, with fused epilogues
//!   (bias, relu) and fused reductions (row/column sums while packing).
//! - [`linear`]: the linear layer's forward and backward on top of it.
//! - [`mlp`]: a two-layer ReLU network's loss and gradients, one training step in one call.
//! - [`threads`]: the library's own thread pool.
//! - [`peak`]: the FMA peak of this CPU, measured.
//! - `gpu` (feature `gpu`): the same products in f32 on a wgpu device.

mod buffers;
mod element;
pub mod gemm;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod linear;
pub mod mlp;
mod openmp;
pub mod peak;
pub mod threads;

pub use buffers::{fail_allocations_from, OutOfMemory};
pub use element::{Element, ElementKind};
