//! matgrad-core: the numerics of matgrad, with no Python in it.
//!
//! - [`gemm`]: a blocked, multi-threaded SIMD GEMM on strided matrices, with fused epilogues
//!   (bias, relu) and fused reductions (row/column sums while packing).
//! - [`threads`]: the library's own thread pool.

mod buffers;
mod element;
pub mod gemm;
pub mod threads;

pub use element::{Element, ElementKind};
