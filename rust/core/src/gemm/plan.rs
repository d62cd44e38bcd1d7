//! The plan: which path a product takes, on how many threads, with which kernel and cache
//! blocks. Every threshold that chooses between paths is here; the measurements behind each
//! are in docs/measurements.md ("GEMM paths").
//!
//! | path      | when                                                         | what runs            |
//! |-----------|--------------------------------------------------------------|----------------------|
//! | empty     | m, n or k is 0                                               | the epilogue, sums   |
//! | amx       | precision high or medium (float32), AMX in use               | bfloat16 tiles       |
//! | packed    | precision high or medium without AMX                         | bfloat16 operands    |
//! | vector    | m or n is 1                                                  | dots or columns      |
//! | outer     | k = 1, C's and B's rows contiguous                           | a row at a time      |
//! | thin      | m or n ≤ [`THIN_MAX`](super::thin::THIN_MAX), the long side's operand along k, the short one too or copied (≤ 4) | dot products |
//! | few rows  | 2 ≤ m ≤ 4 (16 on AVX-512, in passes of 8, where B would be packed and fits half of L3; 8 on AVX2, in passes of 4, m ≠ 6, B of 2 MiB to a quarter of L3), B's rows contiguous and beyond L2 | rows of B streamed |
//! | in place  | B's rows contiguous, and                                     | the micro-kernel on  |
//! |           | small (≤ [`IN_PLACE_MAX_WORK`] or [`IN_PLACE_MAX_WORK_AVX512`], k in one KC block), | A and B where they   |
//! |           | short (C ≤ [`SHORT_PANELS`] tiles tall, B smaller than L2) or skinny | lie, masked edges    |
//! |           | (C ≤ [`SKINNY_TILES`] tiles wide or tall, reads streaming)   |                      |
//! | direct    | m·n·k ≤ [`DIRECT_MAX_WORK`] (B's rows not contiguous)        | a plain loop         |
//! | B copied  | small as above, and serial (B's rows not contiguous)         | B's rows copied, then in place |
//! | packed    | everything else                                              | the five loops       |
//!
//! Products under [`PARALLEL_MIN_WORK`] multiply-adds and [`PARALLEL_MIN_OUTPUTS`] elements of
//! C stay on the calling thread.

use super::blocking::{Blocking, CacheSizes};
use super::dispatch::{HasKernels, Isa};
use super::few_rows;
use super::kernel::{InPlaceKernelFn, MicroKernel};
use super::outer::Outer;
use super::precision::Precision;
use super::problem::Problem;
use super::thin::Thin;
use super::tiny;

/// Products up to this many multiply-adds run the plain loop, without the kernel's tiles.
pub(super) const DIRECT_MAX_WORK: usize = 8 * 8 * 8;
/// Products up to this many multiply-adds (and k within one KC block, B's rows contiguous)
/// run the kernel on the operands in place.
pub(super) const IN_PLACE_MAX_WORK: usize = 96 * 96 * 96;
/// The same on AVX-512, whose wider cache (48 KiB L1d, 2 MiB L2) holds a bigger B: packing
/// and the packed path's fork-joins per block cost more than the in-place reads up to ~160³.
pub(super) const IN_PLACE_MAX_WORK_AVX512: usize = 160 * 160 * 160;
/// C at most this many tiles tall is short: with B smaller than L2 the kernel reads it in
/// place (Xeon model 207, 2 threads, in place against packed: 64 × 256 × 256 f32 1.9×,
/// 64 × 128 × 784 1.6×, 64 × 256 × 784 1.25×, f64 1.25×; 96 rows or a B of 2 MiB alike or
/// slower; docs/measurements.md).
pub(super) const SHORT_PANELS: usize = 8;
/// C at most this many kernel tiles wide or tall is skinny: packing its big operand would
/// serve that many tiles only.
pub(super) const SKINNY_TILES: usize = 2;
/// The largest operand the kernel reads in place a line per row per k step, its rows far
/// apart (A with rows along memory's columns, B with long rows): every step then touches
/// another page, which the hardware prefetchers do not cross.
pub(super) const FAR_ROWS_MAX_BYTES: usize = 4 << 20;
/// Products below this many multiply-adds stay on one thread: they take a few microseconds,
/// about what handing half the tiles to a worker and joining it costs.
pub(super) const PARALLEL_MIN_WORK: usize = 48 * 48 * 48;
/// Products writing at least this many elements of C use the threads whatever their work (an
/// outer product, k = 1, is as fast as memory takes its stores).
pub(super) const PARALLEL_MIN_OUTPUTS: usize = 1 << 17;
/// Vector products with a matrix of at least this many elements use the threads.
pub(super) const PARALLEL_MIN_VECTOR: usize = 1 << 17;

/// How one product is computed.
pub(super) enum Path<T> {
    /// m, n or k is 0: only the epilogue on C (k = 0) and the requested sums.
    Empty,
    /// C a row or a column: matrix·vector, vector·matrix, vector·vector (vector.rs).
    Vector,
    /// k = 1, C's rows contiguous (outer.rs).
    Outer,
    /// C at most [`THIN_MAX`](super::thin::THIN_MAX) rows or columns, the long side's operand contiguous
    /// along k, the short one too or copied so that it is (thin.rs).
    Thin,
    /// C 2 to [`FEW_ROWS_MAX`](super::few_rows::FEW_ROWS_MAX) rows tall (up to 16 on AVX-512 where
    /// B would be packed, 8 on AVX2 where the tiles would pad C) against a B with contiguous
    /// rows, too big for L2: rows of B streamed (few_rows.rs).
    FewRows,
    /// Rows of C a few at a time for products with short rows and a short k (tiny.rs).
    Tall,
    /// A plain loop over C, for tiny products whose B the kernels cannot read in place.
    Direct,
    /// The micro-kernel reading A and B where they lie.
    InPlace(InPlaceKernelFn<T>),
    /// A small product's B copied into contiguous rows, then [`Path::InPlace`].
    InPlaceCopyingB(InPlaceKernelFn<T>),
    /// Float32 at precision high or medium on the matrix engine (amx/).
    Amx,
    /// The five loops around the micro-kernel on packed panels.
    Packed,
}

pub(super) struct Plan<T> {
    pub path: Path<T>,
    pub kernel: MicroKernel<T>,
    pub blocking: Blocking,
    /// Whether the library's threads join in.
    pub parallel: bool,
}

/// The plan for `p` on `isa`: depends on the shapes, strides and ISA only, never on the
/// thread count, so every element gets the same operations whatever the team.
pub(super) fn plan<T: HasKernels>(p: &Problem<T>, isa: Isa) -> Plan<T> {
    let (m, n, k) = (p.m, p.n, p.k);
    let kernel = T::microkernel_for(isa, n);
    let caches = CacheSizes::get();
    let blocking = Blocking::new(kernel.mr, kernel.nr, core::mem::size_of::<T>(), caches);
    let work = m * n * k;
    let path = if work == 0 {
        Path::Empty
    } else if p.precision != Precision::Highest {
        // Operands rounded or split to bfloat16 as they are packed, for the tiles or the FMA kernels.
        if amx_serves(isa) {
            Path::Amx
        } else {
            Path::Packed
        }
    } else if m == 1 || n == 1 {
        Path::Vector
    } else if Outer::fits(p) {
        Path::Outer
    } else if Thin::fits(p) {
        Path::Thin
    } else if few_rows::fits(p, caches, FAR_ROWS_MAX_BYTES, &kernel) {
        Path::FewRows
    } else if tiny::fits_tall(p) {
        Path::Tall
    } else if in_place_pays(p, &kernel, blocking.kc, caches.l2) {
        Path::InPlace(kernel.run_in_place)
    } else if work <= DIRECT_MAX_WORK {
        Path::Direct
    } else if work < PARALLEL_MIN_WORK && is_small(p, &kernel, blocking.kc) {
        Path::InPlaceCopyingB(kernel.run_in_place)
    } else {
        Path::Packed
    };
    // Vector products are as fast as memory delivers their matrix: two threads draw more.
    let big = match path {
        Path::Vector => work >= PARALLEL_MIN_VECTOR,
        _ => work >= PARALLEL_MIN_WORK || m * n >= PARALLEL_MIN_OUTPUTS,
    };
    Plan { path, kernel, blocking, parallel: p.parallel && big }
}

/// Whether reduced-precision float32 products run on AMX: where the CPU and OS allow it, the
/// path is not switched off, and the kernels in use are AVX-512 (whose stores it shares).
fn amx_serves(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa == Isa::Avx512 && super::amx::in_use();
    #[cfg(not(target_arch = "x86_64"))]
    return {
        let _ = isa;
        false
    };
}

/// Whether `p` is small enough to run in place whatever it costs to get B's rows contiguous:
/// at most [`IN_PLACE_MAX_WORK`] (or [`IN_PLACE_MAX_WORK_AVX512`]) multiply-adds, k within
/// one KC block.
fn is_small<T: HasKernels>(p: &Problem<T>, kern: &MicroKernel<T>, kc: usize) -> bool {
    let small_max = if kern.isa == Isa::Avx512 { IN_PLACE_MAX_WORK_AVX512 } else { IN_PLACE_MAX_WORK };
    p.m * p.n * p.k <= small_max && p.k <= kc
}

/// Whether the kernel should read the operands in place rather than packed: when B's lanes
/// are contiguous and packing would not repay its copy. A small product (within one KC block)
/// costs less than packing it; a short one (C at most [`SHORT_PANELS`] tiles tall, B smaller
/// than L2) would pack B for that few tiles' use, which read it from L2 as fast where it lies;
/// a skinny one would pack its big operand for one or two tiles' use, as long as the kernel's
/// reads stream (see [`FAR_ROWS_MAX_BYTES`]).
fn in_place_pays<T: HasKernels>(p: &Problem<T>, kern: &MicroKernel<T>, kc: usize, l2: usize) -> bool {
    let (m, n, k) = (p.m, p.n, p.k);
    if p.b.cs != 1 {
        return false;
    }
    if is_small(p, kern, kc) {
        return true;
    }
    let size = core::mem::size_of::<T>();
    if m.div_ceil(kern.mr) <= SHORT_PANELS && k * n * size < l2 {
        return true;
    }
    let skinny = n.div_ceil(kern.nr) <= SKINNY_TILES || m.div_ceil(kern.mr) <= SKINNY_TILES;
    // Each k step reads one element of each of A's MR rows and NR lanes of one row of B.
    let a_streams = p.a.cs == 1 || m * k * size <= FAR_ROWS_MAX_BYTES;
    let b_streams = p.b.rs.unsigned_abs() <= 2 * kern.nr || k * n * size <= FAR_ROWS_MAX_BYTES;
    skinny && a_streams && b_streams
}
