//! Products with a few rows of C (2 ≤ m ≤ [`FEW_ROWS_MAX`], or up to [`FEW_ROWS_MAX_PACKED`]
//! in passes of 8 rows where B would otherwise be packed, [`FEW_ROWS_MAX_AVX2`] in passes of
//! 4 on AVX2) against a large B whose rows are contiguous, as a linear layer `X W` at a small
//! batch with W stored (in, out): the rows of `x B` (vector.rs's columns form) computed
//! together, so each pass reads each element of B once.
//!
//! The micro-kernels would read B a tile's width of columns per k step, each step on another
//! row (a page apart, out of the prefetchers' reach; past 4 MiB the plan packs B instead),
//! and, with MR rows for m of them, spend most of each FMA's broadcasts on rows that are not
//! there. Here the outputs of a block of columns are accumulated in a buffer that stays in
//! L1, a group of k steps per pass over it: each pass reads that many rows of B front to back
//! (streams the prefetchers follow) and every element of C adds `A[i, p] B[p, j]` for p
//! ascending, fused, whatever the block or group. Threads split the columns, never k, so the
//! bits do not depend on the thread count.

use super::blocking::{block_to_line, CacheSizes, LineAligned};
use super::dispatch::{HasKernels, Isa};
use super::kernel::{MicroKernel, Simd, SimdWork, MAX_LANES};
use super::problem::Problem;
use super::sums;
use crate::element::Element;
use crate::threads::Team;

/// The most rows of C this path takes (m = 1 is a vector product) against any B beyond L2.
/// With more, the micro-kernels fill most of their tiles' rows and read B in place faster
/// (Zen 4, 2 threads, 8 × 1024 × 1024 f32 206 against 154 GFLOP/s here); but where B is too
/// big for them to read in place (`FAR_ROWS_MAX_BYTES`) and would be packed for a few rows,
/// up to [`FEW_ROWS_MAX_PACKED`] rows take this path while B fits half of L3, in passes of
/// at most 8 rows (AVX-512: 8 × 1024 × 1024 f64 50 → 79 GFLOP/s, 8 × 2048 × 1024 f64 39 → 61,
/// 8 × 2048 × 2048 f32 75 → 95; from memory, 8 × 4096 × 4096, packing was as fast for f64
/// and faster for f32; docs/measurements.md).
pub(super) const FEW_ROWS_MAX: usize = 4;
pub(super) const FEW_ROWS_MAX_PACKED: usize = 16;
/// On AVX2 (16 registers: the 4-row kernel is its widest), up to this many rows in passes of
/// [`AVX2_PASS_ROWS`] where the 6-row tiles would pad C (m ≠ 6) and B is from half of
/// `FAR_ROWS_MAX_BYTES` to a quarter of L3: the in-place tiles read B twice, once for a
/// panel of mostly padding, or B was packed for a few rows (Zen 3, 2 threads, in place or
/// packed → here: 8 × 1024 × 1024 f32 384 → 255 µs, 7 rows 435 → 360, 5 × 1536 × 1024 657 →
/// 311, f64 8 × 1024 × 1024 1028 → 551 (NumPy 820), 5 × 1024 × 1024 884 → 429; B of 800 KiB,
/// of 2 MiB alike, of 16 MiB 0.89×, m = 6 0.82×, 12 0.79×; docs/measurements.md).
pub(super) const FEW_ROWS_MAX_AVX2: usize = 8;
/// The most rows one pass over B computes (the kernel's widest block of rows).
const PASS_ROWS: usize = 8;
/// The same on AVX2, whose widest few-row block is 4 rows (16 registers).
const AVX2_PASS_ROWS: usize = 4;
/// Elements of C a block's buffer holds (all its rows together): 8 KiB f32, 16 KiB f64, half
/// of L1 or less, beside the rows of B streaming through.
const BUFFER: usize = 2048;
/// Columns per task when the threads split a product (a multiple of every vector width).
const TASK_COLUMNS: usize = 64;

/// Whether `p` is a few rows of C against a B with contiguous rows too big for L2, where the
/// micro-kernels' column tiles would read its rows far apart (with B in L2 they were as fast
/// or faster: 4 × 256 × 784 f32 108 against 97 GFLOP/s), or, for up to
/// [`FEW_ROWS_MAX_PACKED`] rows on the AVX-512 kernels (32 registers; where it was
/// measured), where they would pack a B bigger than `packed_from` bytes that fits half of
/// L3, or for up to [`FEW_ROWS_MAX_AVX2`] on AVX2 (see there). `caches` are the machine's,
/// `kernel` the micro-kernel the product would otherwise run.
pub(super) fn fits<T: HasKernels>(p: &Problem<T>, caches: CacheSizes, packed_from: usize, kernel: &MicroKernel<T>) -> bool {
    let b_bytes = p.k * p.n * core::mem::size_of::<T>();
    let rows = if kernel.isa == Isa::Avx512 && b_bytes > packed_from && b_bytes <= caches.l3 / 2 {
        FEW_ROWS_MAX_PACKED
    } else if kernel.isa == Isa::Avx2 && p.m % kernel.mr != 0 && (packed_from / 2..=caches.l3 / 4).contains(&b_bytes) {
        FEW_ROWS_MAX_AVX2
    } else {
        FEW_ROWS_MAX
    };
    (2..=rows).contains(&p.m) && p.b.cs == 1 && p.n >= TASK_COLUMNS && p.k >= 16 && b_bytes >= caches.l2
}

/// Computes `p` (see [`fits`]) on `team`.
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn few_rows<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    sums::add_up(p);
    // More rows than the kernel keeps: passes of 8 rows (4 on AVX2) and one of the rest, each
    // reading B again (from L3: B fits half of it). (Equal passes, 6 + 6 rows, cost two 8-row
    // passes; 8 + 4 less: the 4-row kernel takes half the time of the 8-row one.)
    let pass_rows = if isa == Isa::Avx512 { PASS_ROWS } else { AVX2_PASS_ROWS };
    for r0 in (0..p.m).step_by(pass_rows) {
        let rows = p.rows(r0, (r0 + pass_rows).min(p.m));
        let f = Problem { ep: rows.ep.for_k_block(true, true), ..rows };
        team.run_ranges(f.n.div_ceil(TASK_COLUMNS), 1, |range| {
            let cols = range.start * TASK_COLUMNS..(range.end * TASK_COLUMNS).min(f.n);
            T::run_on(isa, &Columns { f: &f, cols })
        })
    }
}

/// Columns `cols` of a product, as [`SimdWork`].
struct Columns<'a, T> {
    /// The pass's rows, its epilogue for the whole of k.
    f: &'a Problem<T>,
    cols: core::ops::Range<usize>,
}

impl<T: Element> SimdWork<T> for Columns<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        let f = self.f;
        // R rows of broadcasts for G k steps, R accumulators and a row of B in registers (at
        // R = 8 the broadcasts are read from L1 by the FMAs, as memory operands).
        match (f.m, S::REGISTERS >= 32) {
            (..=2, true) => blocks::<S, 2, 8>(f, self.cols.clone()),
            (3..=4, true) => blocks::<S, 4, 4>(f, self.cols.clone()),
            (_, true) => blocks::<S, 8, 4>(f, self.cols.clone()),
            (..=2, false) => blocks::<S, 2, 4>(f, self.cols.clone()),
            (_, false) => blocks::<S, 4, 2>(f, self.cols.clone()),
        }
    }
}

/// Columns `cols` in blocks of the buffer's share of each of the R rows (rows past m repeat
/// the last, read and never stored), G k steps per pass over a block's buffer.
///
/// The first block's first vector takes only the columns before B's row reaches a cache line
/// boundary, so that the loads after it read whole lines: NumPy's arrays start 16 bytes past
/// one, and vectors across two lines were slower (Zen 4, 2 threads, 8 × 1024 × 1024 f32
/// 171 → 194 GFLOP/s with B's rows on line boundaries; docs/measurements.md). Every column
/// still adds the same products in the same order, wherever the vectors fall.
#[inline(always)]
unsafe fn blocks<S: Simd, const R: usize, const G: usize>(f: &Problem<S::T>, cols: core::ops::Range<usize>) {
    let fma = |a, b, c| S::fmadd_scalar(a, b, c);
    let lanes = S::LANES;
    let block = BUFFER / R;
    // The buffer on a line boundary, with a vector's room before it for a block's first
    // (short) vector, so that its whole vectors sit on line boundaries too.
    let mut buf = LineAligned([<S::T as Element>::ZERO; BUFFER + MAX_LANES]);
    let rows: [*const S::T; R] = core::array::from_fn(|i| f.a.at(i.min(f.m - 1), 0));
    let mut j0 = cols.start;
    while j0 < cols.end {
        let b = f.b.at(0, j0);
        let (lead, count) = block_to_line(b, lanes, block, cols.end - j0);
        let y = buf.0.as_mut_ptr().add((lanes - lead) % lanes);
        let mut q = 0;
        while q + G <= f.k {
            pass::<S, R, G>(&rows, f.a.cs, b, f.b.rs, q, y, block, count, lead);
            q += G;
        }
        while q < f.k {
            pass::<S, R, 1>(&rows, f.a.cs, b, f.b.rs, q, y, block, count, lead);
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
/// `y + i * block`), starting it at zero when `q` is 0. Row i of A at k step `p` is
/// `rows[i][p * a_cs]`; B's row `p` starts at `b + p * b_rs`. The first vector takes `lead`
/// columns (< LANES) if `lead` is not 0. (vector.rs's columns form is this with R = 1.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn pass<S: Simd, const R: usize, const G: usize>(
    rows: &[*const S::T; R],
    a_cs: isize,
    b: *const S::T,
    b_rs: isize,
    q: usize,
    y: *mut S::T,
    block: usize,
    count: usize,
    lead: usize,
) {
    let lanes = S::LANES;
    let x: [[S::V; G]; R] = core::array::from_fn(|i| core::array::from_fn(|t| S::splat(*rows[i].offset((q + t) as isize * a_cs))));
    let b_rows: [*const S::T; G] = core::array::from_fn(|t| b.offset((q + t) as isize * b_rs));
    let first = q == 0;
    let mut v = 0;
    if lead > 0 {
        let taken = lead.min(count);
        vector::<S, R, G>(&x, &b_rows, 0, y, block, first, Some(S::first_lanes(taken)));
        v = taken;
    }
    while v + lanes <= count {
        vector::<S, R, G>(&x, &b_rows, v, y, block, first, None);
        v += lanes;
    }
    if v < count {
        vector::<S, R, G>(&x, &b_rows, v, y, block, first, Some(S::first_lanes(count - v)));
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
    // (Only `tail`'s lanes: a block's first vector is followed by the next one's columns.)
    for (i, &acc) in acc.iter().enumerate() {
        match tail {
            None => S::store(y.add(i * block + v), acc),
            Some(m) => S::store_masked(y.add(i * block + v), acc, m),
        }
    }
}
