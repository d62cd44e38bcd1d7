//! Thin products: C at most [`THIN_MAX`] rows (or columns) against a long side whose
//! operand runs along k, as in torch's linear layer at a small batch (X Wᵀ with W stored
//! (out, in): X's rows and W's rows both run along k), or a row-major `A B` with B a few
//! columns wide (A's rows run along k; B's few columns are copied so that they do too).
//!
//! Packing would copy all of the long operand for a tile or two of C, and the micro-kernels
//! cannot read its lanes in place (they are rows apart) or, with B's few columns as their
//! lanes, fill only a few lanes of each FMA; so each element of C is a dot product instead:
//! a block of long-side rows against every short-side row, vectors of partial sums along k,
//! added up lane by lane in a fixed order at the end. The long operand is read once, in
//! place; the short one stays in L1. Threads split the long side, never k, so every element
//! is computed the same way on any number of threads.

use super::dispatch::{HasKernels, Isa};
use super::epilogue::Epilogue;
use super::kernel::{Simd, SimdElement, SimdWork};
use super::pack::Block;
use super::problem::Problem;
use super::sums;
use super::vector::sum_lanes;
use crate::buffers::with_scratch;
use crate::element::Element;
use crate::threads::Team;

/// The most rows (or columns) of C this path takes.
pub(super) const THIN_MAX: usize = 8;
/// Long-side rows per task when the threads split a product.
const TASK_ROWS: usize = 64;
/// A short operand that does not run along k is copied so that it does where it has at most
/// this many rows, the long side at least [`COPY_MIN_LONG`] (the copy is then at most a
/// sixteenth of the long operand's reads) and k at least [`COPY_MIN_K`] (each dot product
/// then outweighs adding up its lanes). There the micro-kernels would fill a quarter of each
/// FMA's lanes or less (n = 4 of 16 f32 lanes); at 5–8 rows they fill half of them or more and
/// are faster (Zen 4, 2 threads, 1024 × 8 × 1024: f32 91 against 78 GFLOP/s copied, f64 92
/// against 42: the dots' eight short rows no longer stay in L1; docs/measurements.md).
pub(super) const COPY_MAX_SHORT: usize = 4;
pub(super) const COPY_MIN_LONG: usize = 64;
pub(super) const COPY_MIN_K: usize = 128;

/// `C[s, l] = Σ_p short(s, p) long(l, p)` (in C's own orientation when `short_is_rows`).
#[derive(Clone, Copy)]
pub(crate) struct Thin<T> {
    pub k: usize,
    pub short: *const T,
    pub short_rows: usize,
    pub short_rs: isize,
    /// The short operand's stride along k (1 once copied).
    pub short_ks: isize,
    pub long: *const T,
    pub long_rows: usize,
    pub long_rs: isize,
    pub c: *mut T,
    /// C's strides along the short and the long side.
    pub c_short: isize,
    pub c_long: isize,
    pub short_is_rows: bool,
    pub ep: Epilogue<T>,
}

// SAFETY: read by the threads of one product, which write disjoint parts of C.
unsafe impl<T: Sync> Sync for Thin<T> {}

impl<T: Element> Thin<T> {
    /// Whether `p` is a thin product: the long side's operand contiguous along k, and the
    /// short side's too, or worth copying so that it is ([`COPY_MIN_LONG`], [`COPY_MIN_K`]).
    pub fn fits(p: &Problem<T>) -> bool {
        let short = p.m.min(p.n);
        if !(2..=THIN_MAX).contains(&short) || p.k < 8 {
            return false;
        }
        let (a_along_k, b_along_k) = (p.a.cs == 1, p.b.rs == 1);
        let (long_along_k, short_along_k, long) = if p.m <= p.n { (b_along_k, a_along_k, p.n) } else { (a_along_k, b_along_k, p.m) };
        long_along_k && (short_along_k || (short <= COPY_MAX_SHORT && long >= COPY_MIN_LONG && p.k >= COPY_MIN_K))
    }

    fn of(p: &Problem<T>) -> Thin<T> {
        let ep = p.ep.for_k_block(true, true);
        // A's rows, and B's columns: (pointer, count, stride between them, stride along k).
        let (a_rows, b_cols) = ((p.a.ptr, p.m, p.a.rs, p.a.cs), (p.b.ptr, p.n, p.b.cs, p.b.rs));
        let short_is_rows = p.m <= p.n;
        let ((short, short_rows, short_rs, short_ks), (long, long_rows, long_rs, _)) =
            if short_is_rows { (a_rows, b_cols) } else { (b_cols, a_rows) };
        let (c_short, c_long) = if short_is_rows { (p.c_rs, p.c_cs) } else { (p.c_cs, p.c_rs) };
        Thin { k: p.k, short, short_rows, short_rs, short_ks, long, long_rows, long_rs, c: p.c, c_short, c_long, short_is_rows, ep }
    }

    #[inline(always)]
    unsafe fn store(&self, s: usize, l: usize, x: T, fma: impl Fn(T, T, T) -> T) {
        let c = self.c.offset(s as isize * self.c_short + l as isize * self.c_long);
        let (i, j) = if self.short_is_rows { (s, l) } else { (l, s) };
        self.ep.store_at(x, c, i, j, fma)
    }
}

impl<T: SimdElement> Thin<T> {
    /// The product, its short operand contiguous along k, on `team`.
    ///
    /// SAFETY: as for [`Problem::run`], for the operands `self` describes.
    unsafe fn run(&self, isa: Isa, team: &Team) {
        debug_assert_eq!(self.short_ks, 1);
        let tasks = self.long_rows.div_ceil(TASK_ROWS);
        team.run_ranges(tasks, 1, |range| {
            let rows = range.start * TASK_ROWS..(range.end * TASK_ROWS).min(self.long_rows);
            thin_on(isa, self, rows)
        })
    }
}

/// Computes the thin product `p` (see [`Thin::fits`]).
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn thin<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    sums::add_up(p);
    let t = Thin::of(p);
    if t.short_ks == 1 {
        return t.run(isa, team);
    }
    // The short operand's rows along k, copied once (at most COPY_MAX_SHORT · k elements).
    let (rows, k) = (t.short_rows, t.k);
    with_scratch::<T, _>(rows * k, |copy| {
        Block { ptr: t.short, rs: t.short_rs, cs: t.short_ks }.copy_to_rows(rows, k, copy);
        Thin { short: copy.as_ptr(), short_rs: k as isize, short_ks: 1, ..t }.run(isa, team)
    })
}

/// Long-side rows `rows` of a thin product, as [`SimdWork`].
struct ThinRows<'a, T> {
    t: &'a Thin<T>,
    rows: core::ops::Range<usize>,
}

impl<T: Element> SimdWork<T> for ThinRows<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        thin_with::<S>(self.t, self.rows.clone())
    }
}

/// [`thin_with`] in the registers of `isa`.
///
/// SAFETY: `t` describes valid operands, `rows` lies within its long side, `isa` is supported.
unsafe fn thin_on<T: SimdElement>(isa: Isa, t: &Thin<T>, rows: core::ops::Range<usize>) {
    T::run_on(isa, &ThinRows { t, rows })
}

/// The thin product for long-side rows `rows`, written against one ISA's [`Simd`] type: the
/// short rows (2, 3, 4, 6 or 8 of them, the next count up) against as many long rows as 24
/// accumulators allow with 32 registers, or 8 to 12 with 16 ([`blocks`]; against 4 × 4 and
/// 8 × 2 with the short rows' vectors held, Zen 4, 2 threads, B transposed as torch's
/// weights: 2 × 1024 × 1024 f32 99 → 120 GFLOP/s, 6 rows 142 → 183, 8 rows 126 → 166, f64
/// 2 rows 52 → 66; docs/measurements.md).
///
/// SAFETY: as for [`thin_on`], with the ISA's features enabled in the caller.
#[inline(always)]
pub(crate) unsafe fn thin_with<S: Simd>(t: &Thin<S::T>, rows: core::ops::Range<usize>) {
    if S::REGISTERS >= 32 {
        match t.short_rows {
            ..=2 => blocks::<S, 2, 8>(t, rows),
            3 => blocks::<S, 3, 6>(t, rows),
            4 => blocks::<S, 4, 6>(t, rows),
            5..=6 => blocks::<S, 6, 4>(t, rows),
            _ => blocks::<S, 8, 3>(t, rows),
        }
    } else {
        match t.short_rows {
            ..=2 => blocks::<S, 2, 4>(t, rows),
            3 => blocks::<S, 3, 3>(t, rows),
            4 => blocks::<S, 4, 2>(t, rows),
            5..=6 => blocks::<S, 6, 2>(t, rows),
            _ => blocks::<S, 8, 1>(t, rows),
        }
    }
}

/// Long-side rows `rows`, LB at a time against all the short rows (SB of them, the last
/// repeated past `short_rows`, read and never stored): the LB long rows' vectors held in
/// registers and each short row's loaded as it is used, SB·LB accumulators and LB + 1 vectors
/// (8 × 3: 11 loads per 24 FMAs, against 10 per 16 with the short rows' held at 8 × 2).
#[inline(always)]
unsafe fn blocks<S: Simd, const SB: usize, const LB: usize>(t: &Thin<S::T>, rows: core::ops::Range<usize>) {
    let fma = |a, b, c| S::fmadd_scalar(a, b, c);
    let lanes = S::LANES;
    let whole = t.k / lanes * lanes;
    let tail = S::first_lanes(t.k - whole);
    let sc = t.short_rows;
    let short: [*const S::T; SB] = core::array::from_fn(|s| t.short.offset(s.min(sc - 1) as isize * t.short_rs));
    let mut l = rows.start;
    while l < rows.end {
        let count = LB.min(rows.end - l);
        let long: [*const S::T; LB] = core::array::from_fn(|r| t.long.offset((l + r.min(count - 1)) as isize * t.long_rs));
        let acc = held_k_loop::<S, SB, LB>(&short, &long, whole, (whole < t.k).then_some(tail));
        for (r, acc) in acc.iter().enumerate().take(count) {
            for (s, &v) in acc.iter().enumerate().take(sc) {
                t.store(s, l + r, sum_lanes::<S>(v), fma);
            }
        }
        l += count;
    }
}

/// The k loop of [`blocks`], its accumulators returned by value (updated in place
/// through the caller's array, they went through the stack at every step).
#[inline(always)]
unsafe fn held_k_loop<S: Simd, const SB: usize, const LB: usize>(
    short: &[*const S::T; SB],
    long: &[*const S::T; LB],
    whole: usize,
    tail: Option<S::Mask>,
) -> [[S::V; SB]; LB] {
    let mut acc = [[S::zero(); SB]; LB];
    let mut p = 0;
    while p < whole {
        let lv: [S::V; LB] = core::array::from_fn(|r| S::load(long[r].add(p)));
        for s in 0..SB {
            let sv = S::load(short[s].add(p));
            for (acc, &lv) in acc.iter_mut().zip(&lv) {
                acc[s] = S::fmadd(sv, lv, acc[s]);
            }
        }
        p += S::LANES;
    }
    if let Some(m) = tail {
        let lv: [S::V; LB] = core::array::from_fn(|r| S::load_masked(long[r].add(whole), m));
        for s in 0..SB {
            let sv = S::load_masked(short[s].add(whole), m);
            for (acc, &lv) in acc.iter_mut().zip(&lv) {
                acc[s] = S::fmadd(sv, lv, acc[s]);
            }
        }
    }
    acc
}
