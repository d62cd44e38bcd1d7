//! matgrad-core: the numerics of matgrad, with no Python in it.
//!
//! - [`gemm`]: a blocked, multi-threaded SIMD GEMM on strided matrices, with fused epilogues
//!   (bias, relu) and fused reductions (row/column sums while packing).
//! - [`linear`]: the linear layer's forward and backward on top of it.
//! - [`threads`]: the library's own thread pool.

mod buffers;
mod element;
pub mod gemm;
pub mod linear;
pub mod threads;

pub use element::{Element, ElementKind};
