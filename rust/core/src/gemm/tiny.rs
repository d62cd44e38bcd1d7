//! Batches of tiny products (at most [`TINY_MAX`] in every dimension, as in batched 4 × 4
//! transforms or small attention heads): C = A B per matrix, with nothing set up per matrix.
//!
//! The in-place micro-kernel pays, per matrix, for a register block built for large tiles: an
//! MR-row block over 4 rows, its operand and store descriptions, a call through a pointer.
//! Measured on the Xeon (AVX-512): ~42 ns per 4 × 4 f32 product that way. Here each matrix is
//! a few loops over rows of C: four rows at a time (four independent FMA chains), one vector
//! of lanes at a time (masked at the edge, so nothing past an operand is read or written),
//! `acc = fma(A[i, p], B[p, lanes], acc)` for p ascending from zero, then the store. That is
//! the micro-kernels' order for a k within one block, so the bits equal theirs.

use super::dispatch::Isa;
use super::kernel::{run_on, Simd, SimdWork};
use super::problem::Problem;
use super::{HasKernels, Precision};
use crate::element::Element;

/// The largest m, n and k this path takes.
pub(super) const TINY_MAX: usize = 16;

/// Whether every matrix of a batch of `p` can go this way: tiny, B's and C's rows contiguous,
/// nothing but the store after the sums (`C = A B`).
pub(super) fn fits<T: HasKernels>(p: &Problem<T>) -> bool {
    let ep = &p.ep;
    let plain = ep.alpha == T::ONE && ep.beta == T::ZERO && !ep.bias.is_some() && !ep.relu && !ep.mask.is_some();
    p.m.max(p.n).max(p.k) <= TINY_MAX
        && p.k > 0
        && p.precision == Precision::Highest
        && p.b.cs == 1
        && p.c_cs == 1
        && plain
        && p.a_row_sums.is_none()
        && p.b_col_sums.is_none()
}

/// The matrices `range` of a batch of `p`, matrix `t` at offsets `offsets(t)` (A, B, C as the
/// caller passed them, before any swap).
struct TinyBatch<'a, T, F> {
    p: &'a Problem<T>,
    range: core::ops::Range<usize>,
    offsets: F,
}

impl<T: Element, F: Fn(usize) -> (isize, isize, isize)> SimdWork for TinyBatch<'_, T, F> {
    #[inline(always)]
    unsafe fn run<S: Simd>(&self) {
        // (S::T is T: the caller's promise.)
        let p = &*(self.p as *const Problem<T>).cast::<Problem<S::T>>();
        // The lanes of each vector of C's row, the same for every matrix: worked out once.
        let mut lanes = [S::first_lanes(0); TINY_MAX];
        let vectors = p.n.div_ceil(S::LANES);
        for (v, l) in lanes.iter_mut().enumerate().take(vectors) {
            *l = S::first_lanes((p.n - v * S::LANES).min(S::LANES));
        }
        for t in self.range.clone() {
            let (oa, ob, oc) = (self.offsets)(t);
            let (oa, ob) = if p.swapped { (ob, oa) } else { (oa, ob) };
            let (a, b, c) = (p.a.ptr.wrapping_offset(oa), p.b.ptr.wrapping_offset(ob), p.c.wrapping_offset(oc));
            for (v, &lanes) in lanes.iter().enumerate().take(vectors) {
                let j0 = v * S::LANES;
                tiny_columns::<S>(p, a, b.add(j0), c.add(j0), lanes);
            }
        }
    }
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
    run_on(isa, T::KIND, &TinyBatch { p, range, offsets })
}

/// One vector of columns of a tiny product: C's `lanes` at `c` (rows `p.c_rs` apart) from A
/// at `a` and B's matching lanes at `b`, with `p`'s strides.
#[inline(always)]
unsafe fn tiny_columns<S: Simd>(p: &Problem<S::T>, a: *const S::T, b: *const S::T, c: *mut S::T, lanes: S::Mask) {
    let (m, k) = (p.m, p.k);
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
