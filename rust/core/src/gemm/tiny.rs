//! Batches of tiny products (at most [`TINY_MAX`] in every dimension, as in batched 4 × 4
//! transforms or small attention heads): C = A B per matrix, with nothing set up per matrix;
//! and tall products with short rows and a tiny k ((20000, 3) @ (3, 3): 5× faster than the
//! micro-kernel's tiles, whose set-up outweighs a k loop of a few steps), rows shared by the
//! threads.
//!
//! The in-place micro-kernel pays, per matrix, for a register block built for large tiles: an
//! MR-row block over 4 rows, its operand and store descriptions, a call through a pointer.
//! Measured on the Xeon (AVX-512): ~42 ns per 4 × 4 f32 product that way. Here each matrix is
//! a few loops over rows of C: four rows at a time (four independent FMA chains), one vector
//! of lanes at a time (masked at the edge, so nothing past an operand is read or written),
//! `acc = fma(A[i, p], B[p, lanes], acc)` for p ascending from zero, then the store. That is
//! the micro-kernels' order for a k within one block, so the bits equal theirs.

use super::dispatch::Isa;
use super::kernel::{Simd, SimdWork};
use super::problem::Problem;
use super::{HasKernels, Precision};
use crate::element::Element;
use crate::threads::Team;

/// The largest m, n and k of the matrices of a batch this path takes.
pub(super) const TINY_MAX: usize = 16;
/// The largest n, and k, of one tall product (m beyond n) this path takes. At k = 32 the
/// micro-kernel's register block wins (it loads less per FMA); at k ≤ 8 its per-tile set-up
/// costs more than the k loop (measured on the Xeon: (4096, 8) @ (8, 24) in half the time).
pub(super) const TALL_MAX: usize = 32;
pub(super) const TALL_K_MAX: usize = 8;
/// Rows of C per task when threads share a tall product.
const TASK_ROWS: usize = 64;

/// Whether every matrix of a batch of `p` can go this way: tiny, B's and C's rows contiguous,
/// no epilogue but the store (`C = A B`: no bias, scaling, ReLU or mask) and no row or column
/// sums asked for.
pub(super) fn fits<T: HasKernels>(p: &Problem<T>) -> bool {
    p.m.max(p.n).max(p.k) <= TINY_MAX && plain_rows(p)
}

/// Whether `p` is one tall product this path takes: n at most [`TALL_MAX`] with m beyond it, k
/// at most [`TALL_K_MAX`], the rest as for [`fits`].
pub(super) fn fits_tall<T: HasKernels>(p: &Problem<T>) -> bool {
    p.m > TALL_MAX && p.n <= TALL_MAX && p.k <= TALL_K_MAX && plain_rows(p)
}

/// Float32 at the highest precision (or float64), B's and C's rows contiguous, `C = A B`.
fn plain_rows<T: HasKernels>(p: &Problem<T>) -> bool {
    let ep = &p.ep;
    let plain = ep.alpha == T::ONE && ep.beta == T::ZERO && !ep.bias.is_some() && !ep.relu && !ep.mask.is_some();
    p.k > 0 && p.precision == Precision::Highest && p.b.cs == 1 && p.c_cs == 1 && plain && p.a_row_sums.is_none() && p.b_col_sums.is_none()
}

/// The matrices `range` of a batch of `p`, matrix `t` at offsets `offsets(t)` (A, B, C as the
/// caller passed them, before any swap).
struct TinyBatch<'a, T, F> {
    p: &'a Problem<T>,
    range: core::ops::Range<usize>,
    offsets: F,
}

impl<T: Element, F: Fn(usize) -> (isize, isize, isize)> SimdWork<T> for TinyBatch<'_, T, F> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        let p = self.p;
        // The lanes of each vector of C's row, the same for every matrix: worked out once.
        let (lanes, vectors) = row_lanes::<S>(p.n);
        for t in self.range.clone() {
            let (oa, ob, oc) = (self.offsets)(t);
            let (oa, ob) = if p.swapped { (ob, oa) } else { (oa, ob) };
            let (a, b, c) = (p.a.ptr.wrapping_offset(oa), p.b.ptr.wrapping_offset(ob), p.c.wrapping_offset(oc));
            for (v, &lanes) in lanes.iter().enumerate().take(vectors) {
                let j0 = v * S::LANES;
                tiny_columns::<S>(p, p.m, a, b.add(j0), c.add(j0), lanes);
            }
        }
    }
}

/// The lanes of each vector of a row of `n` elements, and how many vectors.
#[inline(always)]
unsafe fn row_lanes<S: Simd>(n: usize) -> ([S::Mask; TALL_MAX], usize) {
    let mut lanes = [S::first_lanes(0); TALL_MAX];
    let vectors = n.div_ceil(S::LANES);
    for (v, l) in lanes.iter_mut().enumerate().take(vectors) {
        *l = S::first_lanes((n - v * S::LANES).min(S::LANES));
    }
    (lanes, vectors)
}

/// Rows `rows` of one tall product.
struct TallRows<'a, T> {
    p: &'a Problem<T>,
    rows: core::ops::Range<usize>,
}

impl<T: Element> SimdWork<T> for TallRows<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        let p = self.p;
        let (lanes, vectors) = row_lanes::<S>(p.n);
        let i0 = self.rows.start as isize;
        let (a, c) = (p.a.ptr.offset(i0 * p.a.rs), p.c.offset(i0 * p.c_rs));
        for (v, &lanes) in lanes.iter().enumerate().take(vectors) {
            let j0 = v * S::LANES;
            tiny_columns::<S>(p, self.rows.len(), a, p.b.ptr.add(j0), c.add(j0), lanes);
        }
    }
}

/// One tall product (see [`fits_tall`]), its rows shared among `team`'s threads (each element
/// computed the same way on any number of them).
///
/// SAFETY: as for [`Problem::run`]; `fits_tall(p)`; `isa` is supported by this CPU.
pub(super) unsafe fn tall<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    debug_assert!(fits_tall(p));
    let tasks = p.m.div_ceil(TASK_ROWS);
    let m = p.m;
    // SAFETY: each task writes its own rows of C; A and B are only read.
    team.run_ranges(tasks, 1, |range| T::run_on(isa, &TallRows { p, rows: range.start * TASK_ROWS..(range.end * TASK_ROWS).min(m) }))
}

/// Computes the matrices `range` of a batch of tiny products (see [`fits`]).
///
/// SAFETY: as for [`Problem::run`], for every matrix of the batch (`offsets(t)` as
/// [`Problem::shifted`] takes them); `fits(p)`; `isa` is supported by this CPU.
pub(super) unsafe fn tiny_batch<T: HasKernels>(
    p: &Problem<T>,
    isa: Isa,
    range: core::ops::Range<usize>,
    offsets: impl Fn(usize) -> (isize, isize, isize),
) {
    debug_assert!(fits(p));
    T::run_on(isa, &TinyBatch { p, range, offsets })
}

/// One vector of columns of `m` rows of a tiny product: C's `lanes` at `c` (rows `p.c_rs`
/// apart) from A at `a` and B's matching lanes at `b`, with `p`'s strides.
#[inline(always)]
unsafe fn tiny_columns<S: Simd>(p: &Problem<S::T>, m: usize, a: *const S::T, b: *const S::T, c: *mut S::T, lanes: S::Mask) {
    let k = p.k;
    let (a_rs, a_k, b_k, c_rs) = (p.a.rs, p.a.cs, p.b.rs, p.c_rs);
    let mut i = 0;
    while i + 4 <= m {
        let rows = [0, 1, 2, 3].map(|r| a.offset((i + r) as isize * a_rs));
        let mut acc = [S::zero(); 4];
        for q in 0..k as isize {
            let bv = S::load_masked(b.offset(q * b_k), lanes);
            for (acc, row) in acc.iter_mut().zip(rows) {
                *acc = S::fmadd(S::splat(*row.offset(q * a_k)), bv, *acc);
            }
        }
        for (r, acc) in acc.into_iter().enumerate() {
            S::store_masked(c.offset((i + r) as isize * c_rs), acc, lanes);
        }
        i += 4;
    }
    for i in i..m {
        let row = a.offset(i as isize * a_rs);
        let mut acc = S::zero();
        for q in 0..k as isize {
            acc = S::fmadd(S::splat(*row.offset(q * a_k)), S::load_masked(b.offset(q * b_k), lanes), acc);
        }
        S::store_masked(c.offset(i as isize * c_rs), acc, lanes);
    }
}
