//! Products with a few rows of C (2 ≤ m ≤ [`FEW_ROWS_MAX`]) against a large B whose rows are
//! contiguous, as a linear layer `X W` at a small batch with W stored (in, out): the rows of
//! `x B` (vector.rs's columns form) computed together, so each element of B is read once.
//!
//! The micro-kernels would read B a tile's width of columns per k step, each step on another
//! row (a page apart, out of the prefetchers' reach; past 4 MiB the plan packs B instead),
//! and, with MR rows for m of them, spend most of each FMA's broadcasts on rows that are not
//! there. Here the outputs of a block of
//! columns are accumulated in a buffer that stays in L1, a group of k steps per pass over it:
//! each pass reads that many rows of B front to back (streams the prefetchers follow) and
//! every element of C adds `A[i, p] B[p, j]` for p ascending, fused, whatever the block or
//! group. Threads split the columns, never k, so the bits do not depend on the thread count.

use super::dispatch::{HasKernels, Isa};
use super::epilogue::Epilogue;
use super::kernel::{run_on, Simd, SimdWork};
use super::problem::Problem;
use super::sums;
use crate::element::Element;
use crate::threads::Team;

/// The most rows of C this path takes (m = 1 is a vector product). With more, the buffer's
/// loads and stores outweigh the FMAs they feed, and the micro-kernels fill most of their
/// tiles' rows: slower here at m = 8 (Zen 4, 2 threads, 8 × 1024 × 1024 f32 108 against 206
/// GFLOP/s; docs/measurements.md).
pub(super) const FEW_ROWS_MAX: usize = 4;
/// Elements of C a block's buffer holds (all its rows together): 8 KiB f32, 16 KiB f64, half
/// of L1 or less, beside the rows of B streaming through.
const BUFFER: usize = 2048;
/// Columns per task when the threads split a product (a multiple of every vector width).
const TASK_COLUMNS: usize = 64;

/// The product seen as a few rows of C, each `A[i, :] B`.
#[derive(Clone, Copy)]
struct FewRows<T> {
    m: usize,
    n: usize,
    k: usize,
    a: *const T,
    a_rs: isize,
    a_cs: isize,
    /// B's rows are contiguous (`b.cs == 1`).
    b: *const T,
    b_rs: isize,
    c: *mut T,
    c_rs: isize,
    c_cs: isize,
    ep: Epilogue<T>,
}

// SAFETY: read by the threads of one product, which write disjoint columns of C.
unsafe impl<T: Sync> Sync for FewRows<T> {}

/// Whether `p` is a few rows of C against a B with contiguous rows too big for L2 (`l2`
/// bytes), where the micro-kernels' column tiles would read its rows far apart (or pack it).
/// (With B in L2 they were as fast or faster: 4 × 256 × 784 f32 108 against 97 GFLOP/s.)
pub(super) fn fits<T: HasKernels>(p: &Problem<T>, l2: usize) -> bool {
    let b_bytes = p.k * p.n * core::mem::size_of::<T>();
    (2..=FEW_ROWS_MAX).contains(&p.m) && p.b.cs == 1 && p.n >= TASK_COLUMNS && p.k >= 16 && b_bytes >= l2
}

/// Computes `p` (see [`fits`]) on `team`.
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn few_rows<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    sums::add_up(p);
    let f = FewRows {
        m: p.m,
        n: p.n,
        k: p.k,
        a: p.a.ptr,
        a_rs: p.a.rs,
        a_cs: p.a.cs,
        b: p.b.ptr,
        b_rs: p.b.rs,
        c: p.c,
        c_rs: p.c_rs,
        c_cs: p.c_cs,
        ep: p.ep.for_k_block(true, true),
    };
    team.run_ranges(f.n.div_ceil(TASK_COLUMNS), 1, |range| {
        let cols = range.start * TASK_COLUMNS..(range.end * TASK_COLUMNS).min(f.n);
        run_on(isa, T::KIND, &Columns { f: &f, cols })
    })
}

/// Columns `cols` of a product, as [`SimdWork`].
struct Columns<'a, T> {
    f: &'a FewRows<T>,
    cols: core::ops::Range<usize>,
}

impl<T: Element> SimdWork for Columns<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd>(&self) {
        // (S::T is T: the caller's promise.)
        let f = &*(self.f as *const FewRows<T>).cast::<FewRows<S::T>>();
        // R rows of broadcasts for G k steps, R accumulators and a row of B in registers.
        match (f.m == 2, S::REGISTERS >= 32) {
            (true, true) => blocks::<S, 2, 8>(f, self.cols.clone()),
            (false, true) => blocks::<S, 4, 4>(f, self.cols.clone()),
            (true, false) => blocks::<S, 2, 4>(f, self.cols.clone()),
            (false, false) => blocks::<S, 4, 2>(f, self.cols.clone()),
        }
    }
}

/// Columns `cols` in blocks of the buffer's share of each of the R rows (rows past m repeat
/// the last, read and never stored), G k steps per pass over a block's buffer.
#[inline(always)]
unsafe fn blocks<S: Simd, const R: usize, const G: usize>(f: &FewRows<S::T>, cols: core::ops::Range<usize>) {
    let fma = |a, b, c| S::fmadd_scalar(a, b, c);
    let block = BUFFER / R;
    let mut buf = [<S::T as Element>::ZERO; BUFFER];
    let y = buf.as_mut_ptr();
    let rows: [*const S::T; R] = core::array::from_fn(|i| f.a.offset(i.min(f.m - 1) as isize * f.a_rs));
    let mut j0 = cols.start;
    while j0 < cols.end {
        let count = block.min(cols.end - j0);
        let b = f.b.add(j0);
        let mut q = 0;
        while q + G <= f.k {
            pass::<S, R, G>(&rows, f.a_cs, b, f.b_rs, q, y, block, count);
            q += G;
        }
        while q < f.k {
            pass::<S, R, 1>(&rows, f.a_cs, b, f.b_rs, q, y, block, count);
            q += 1;
        }
        for i in 0..f.m {
            for j in 0..count {
                let c = f.c.offset(i as isize * f.c_rs + (j0 + j) as isize * f.c_cs);
                f.ep.store_at(*y.add(i * block + j), c, i, j0 + j, fma);
            }
        }
        j0 += count;
    }
}

/// Adds k steps `q..q + G` to the first `count` columns of the buffer `y` (row i at
/// `y + i * block`), starting it at zero when `q` is 0. B's row `p` starts at `b + p * b_rs`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pass<S: Simd, const R: usize, const G: usize>(
    rows: &[*const S::T; R],
    a_cs: isize,
    b: *const S::T,
    b_rs: isize,
    q: usize,
    y: *mut S::T,
    block: usize,
    count: usize,
) {
    let lanes = S::LANES;
    let x: [[S::V; G]; R] = core::array::from_fn(|i| core::array::from_fn(|t| S::splat(*rows[i].offset((q + t) as isize * a_cs))));
    let b_rows: [*const S::T; G] = core::array::from_fn(|t| b.offset((q + t) as isize * b_rs));
    let first = q == 0;
    let whole = count / lanes * lanes;
    let mut v = 0;
    while v < whole {
        vector::<S, R, G>(&x, &b_rows, v, y, block, first, None);
        v += lanes;
    }
    if whole < count {
        vector::<S, R, G>(&x, &b_rows, whole, y, block, first, Some(S::first_lanes(count - whole)));
    }
}

/// The lanes from column `v` of a pass: R accumulators (zero, or read from the buffer `y`),
/// G rows of B added, stored back; B's lanes in `tail` only, if given (the rest read as 0).
/// A function, not a closure, so that it inlines into the `#[target_feature]` caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn vector<S: Simd, const R: usize, const G: usize>(
    x: &[[S::V; G]; R],
    b_rows: &[*const S::T; G],
    v: usize,
    y: *mut S::T,
    block: usize,
    first: bool,
    tail: Option<S::Mask>,
) {
    let mut acc = [S::zero(); R];
    if !first {
        for (i, acc) in acc.iter_mut().enumerate() {
            *acc = S::load(y.add(i * block + v));
        }
    }
    for (t, b_row) in b_rows.iter().enumerate() {
        let bv = match tail {
            None => S::load(b_row.add(v)),
            Some(m) => S::load_masked(b_row.add(v), m),
        };
        for i in 0..R {
            acc[i] = S::fmadd(x[i][t], bv, acc[i]);
        }
    }
    for (i, &acc) in acc.iter().enumerate() {
        S::store(y.add(i * block + v), acc);
    }
}
