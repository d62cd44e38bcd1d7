//! Paths for products that packing would not repay.
//!
//! - [`gemm_direct`], for tiny ones, on one thread: each row of C is accumulated in a stack
//!   buffer as `acc += A[i,p] * B[p,:]`, a loop the compiler vectorizes when B's rows are
//!   contiguous.
//! - [`gemm_in_place`], for small ones and for skinny ones (C one or two tiles wide or tall,
//!   so each element of the big operand would be packed for one or two tiles' use): the
//!   register-blocked micro-kernel reading A and B where they lie ([`InPlaceOperands`]), so
//!   nothing is copied; or, for small ones whose B's rows are not contiguous (a transposed
//!   view, as Bᵀ in a gradient G Bᵀ), [`gemm_in_place_copying_b`]: B copied into rows that
//!   are, which costs a 1/m share of the product's work where packing would copy A too.

use super::blocking::{elements_to_line, even_block, LINE_BYTES};
use super::kernel::{InPlaceKernelFn, InPlaceOperands, MicroKernel, MAX_MR};
use super::pack::Block;
use super::problem::Problem;
use super::{sums, HasKernels, Isa};
use crate::buffers::with_scratch;
use crate::threads::Team;

/// C = A B through the micro-kernel without packing: A's rows and B's rows (contiguous) are
/// read where they lie, a column of tiles per kernel call, each tile over all of k in the same
/// KC blocks as the packed path (so the same operations in the same order: the same bits). A
/// last, partial strip of B is read with masked loads, so nothing past B is touched and
/// nothing is copied. Columns of tiles are shared among `team`'s threads; the requested sums
/// are added up first, in k order as packing adds them.
///
/// SAFETY: as for [`Problem::run`]; B's lanes are contiguous (`p.b.cs == 1`); `run` is the
/// in-place twin of `kern` and its ISA is supported by this CPU; `kc` is a multiple of 8.
pub(super) unsafe fn gemm_in_place<T: HasKernels>(p: &Problem<T>, kern: &MicroKernel<T>, run: InPlaceKernelFn<T>, kc: usize, team: &Team) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (mr, nr) = (kern.mr, kern.nr);
    debug_assert!(p.b.cs == 1 && mr <= MAX_MR);
    let kc = even_block(k, kc, 8);
    sums::add_up(p);
    // Strips of NR columns after a first one that ends on a cache line of B, so that every
    // later strip's vectors load whole lines of B's rows (and store whole lines of a C that
    // lies as B does): NumPy's arrays start 16 bytes past a line. The first strip is as wide
    // as that allows (44 of 48 f32 columns), and only where that adds no strip (n = 64 at
    // NR = 32 would take three). Each column of C gets the same operations wherever the
    // strips fall: the same bits.
    let strips_of = |first: usize| if n <= first { 1 } else { 1 + (n - first).div_ceil(nr) };
    let first = Some(first_strip(p.b.ptr, nr)).filter(|&f| strips_of(f) == n.div_ceil(nr)).unwrap_or(nr);
    let strips = strips_of(first);
    let strip_at = |s: usize| if s == 0 { 0 } else { first + (s - 1) * nr };
    let panels = m.div_ceil(mr);
    // The kernel computes a column of up to RUN_PANELS tiles per call, one below the other
    // (kernel/mod.rs: `in_place_tiles`); such a column is the unit of work. Unit order: along
    // the longer side of C, so that each thread's share (a contiguous run of units) reads the
    // long operand once and writes C in long runs; along a C taller than wide, the columns of
    // one group of row panels follow one another (measured: a 2048 × 32 × 32 f64 product split
    // by column strips ran at 0.4x NumPy's speed, its threads writing alternate lines).
    let rows_outer = panels >= strips;
    let groups = panels.div_ceil(RUN_PANELS);
    let tiles = |(i0, count, rows): (usize, usize, usize), j0: usize| {
        let cols = if j0 == 0 { first } else { nr }.min(n - j0);
        let mut src = column_operands(p.a, Block { ptr: p.b.at(0, j0), ..p.b }, cols, mr, i0, count, rows);
        for pc in (0..k).step_by(kc) {
            let steps = kc.min(k - pc);
            run(steps, &src, &p.store(i0, j0, rows, cols, pc == 0, pc + steps == k));
            // (Wrapping: past the last block the pointers are never read.)
            for row in src.rows.iter_mut().take(mr) {
                *row = row.wrapping_offset(steps as isize * src.a_k);
            }
            src.b = src.b.wrapping_offset(steps as isize * src.b_k);
        }
    };
    let column = |u: usize| {
        let (g, s) = if rows_outer { (u / strips, u % strips) } else { (u % groups, u / groups) };
        let (q0, q1) = (g * RUN_PANELS, ((g + 1) * RUN_PANELS).min(panels));
        column_calls(q0, q1, m, mr).for_each(|call| tiles(call, strip_at(s)));
    };
    let units = groups * strips;
    if team.threads() == 1 {
        // Small products: no task machinery at all.
        (0..units).for_each(column);
    } else {
        // SAFETY: each tile of C is written by one task; A and B are only read.
        team.run_ranges(units, 1, |range| range.for_each(column));
    }
}

/// The width of the first strip of columns: `nr`, or, where B starts past a cache line
/// boundary, the most columns up to `nr` that end on one.
fn first_strip<T>(b: *const T, nr: usize) -> usize {
    let line = LINE_BYTES / core::mem::size_of::<T>();
    let lead = elements_to_line(b);
    if lead == 0 || nr < line {
        nr
    } else {
        lead + (nr - lead) / line * line
    }
}

/// [`gemm_in_place`] for a small product whose B's rows are not contiguous: B copied into a
/// row-major scratch first ([`Block::copy_to_rows`]), then read in place. The same operations
/// on the same values as the packed path: the same bits. Only for products on one thread (below `PARALLEL_MIN_WORK`), where the copy, serial, costs less
/// than packing both operands (Zen 4, one thread, B a transposed view, against packing:
/// n = 16 f32 20 → 25 GFLOP/s, 32 55 → 60, 47 66 → 68; both transposed 18 → 26, 49 → 59,
/// 56 → 67; f64 alike. At 64³ on two threads packing, in parallel, was faster.)
///
/// SAFETY: as for [`gemm_in_place`], except that B may have any strides.
pub(super) unsafe fn gemm_in_place_copying_b<T: HasKernels>(
    p: &Problem<T>,
    kern: &MicroKernel<T>,
    run: InPlaceKernelFn<T>,
    kc: usize,
    team: &Team,
) {
    let (n, k) = (p.n, p.k);
    with_scratch::<T, _>(k * n, |copy| {
        p.b.copy_to_rows(k, n, copy);
        let rows = Problem { b: Block { ptr: copy.as_ptr(), rs: n as isize, cs: 1 }, ..*p };
        gemm_in_place(&rows, kern, run, kc, team)
    })
}

/// The most tiles one call of the in-place kernel computes, one below the other: 4 keeps the
/// threads' shares of a 64 × 64 product as with a call per tile (8 made n = 64 slower on two
/// threads, the rest alike).
const RUN_PANELS: usize = 4;

/// A batch of small products (k within one KC block) in place: the kernel called tile after
/// tile, matrix after matrix, with only its pointers moved, none of the per-product set-up
/// (measured: a batch of 1000 4 × 4 products spent most of its time there).
///
/// SAFETY: as for [`gemm_in_place`], for every matrix of the batch (`offsets(t)` gives matrix
/// `t`'s offsets into the caller's A, B and C, as [`Problem::shifted`] takes them); `p.k`
/// fits one KC block, and its epilogue has no operands (bias, mask) to move.
pub(super) unsafe fn in_place_batch<T: HasKernels>(
    p: &Problem<T>,
    kern: &MicroKernel<T>,
    run: InPlaceKernelFn<T>,
    count: core::ops::Range<usize>,
    offsets: impl Fn(usize) -> (isize, isize, isize),
) {
    let (m, n, k) = (p.m, p.n, p.k);
    let (mr, nr) = (kern.mr, kern.nr);
    debug_assert!(p.b.cs == 1 && mr <= MAX_MR && k > 0);
    for t in count {
        let (oa, ob, oc) = offsets(t);
        let (oa, ob) = if p.swapped { (ob, oa) } else { (oa, ob) };
        let (a, b, c) = (p.a.ptr.wrapping_offset(oa), p.b.ptr.wrapping_offset(ob), p.c.wrapping_offset(oc));
        for j0 in (0..n).step_by(nr) {
            let cols = nr.min(n - j0);
            for (i0, count, rows) in column_calls(0, m.div_ceil(mr), m, mr) {
                let src = column_operands(Block { ptr: a, ..p.a }, Block { ptr: b.add(j0), ..p.b }, cols, mr, i0, count, rows);
                let mut st = p.store(i0, j0, rows, cols, true, true);
                st.c = c.offset(i0 as isize * p.c_rs + j0 as isize * p.c_cs);
                run(k, &src, &st);
            }
        }
    }
}

/// The kernel calls that cover row panels `q0..q1` of a C `m` rows tall, as `(first row,
/// tiles, rows per tile)`: the full tiles in one call, a partial last one (C's last rows) in
/// another.
fn column_calls(q0: usize, q1: usize, m: usize, mr: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let full = (m / mr).clamp(q0, q1);
    [(q0 * mr, full - q0, mr), (full * mr, q1 - full, m.saturating_sub(full * mr))].into_iter().filter(|&(_, tiles, _)| tiles > 0)
}

/// The in-place operands of a column of `count` tiles, each `rows` tall (`rows` < MR only for
/// a lone tile), from row `i0` of `a`, beside the strip of `b` that starts at `b.ptr`, `cols`
/// lanes wide.
fn column_operands<T>(a: Block<T>, b: Block<T>, cols: usize, mr: usize, i0: usize, count: usize, rows: usize) -> InPlaceOperands<T> {
    let mut src = InPlaceOperands {
        rows: [core::ptr::null(); MAX_MR],
        a_k: a.cs,
        b: b.ptr,
        b_k: b.rs,
        b_lanes: cols,
        panels: count,
        a_panel: mr as isize * a.rs,
    };
    // Rows past C's edge repeat its last row (read, never stored).
    for (i, row) in src.rows.iter_mut().enumerate().take(mr) {
        *row = a.ptr.wrapping_offset((i0 + i.min(rows - 1)) as isize * a.rs);
    }
    src
}

/// Columns of C accumulated at a time (a few KiB of stack).
const CHUNK: usize = 64;

/// The plain loop: each row of C accumulated in a stack buffer as `acc += A[i,p] * B[p,:]`,
/// then stored through the epilogue.
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn gemm_direct<T: HasKernels>(p: &Problem<T>, isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx2) {
        // SAFETY: dispatch only selects these ISAs after detecting AVX2 and FMA.
        return direct_avx2(p);
    }
    let _ = isa;
    // Unfused, as the generic kernel is (a libm fma call would be slow without an FMA unit).
    direct(p, |a, b, c| a * b + c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_avx2<T: HasKernels>(p: &Problem<T>) {
    // Fused, as the AVX kernels' epilogue is.
    direct(p, T::mul_add)
}

#[inline(always)]
unsafe fn direct<T: HasKernels>(p: &Problem<T>, fma: impl Fn(T, T, T) -> T + Copy) {
    // Copied out so that stores through C cannot force them to be re-read.
    let (m, n, k) = (p.m, p.n, p.k);
    let (a, b) = (p.a, p.b);
    let (c, c_rs, c_cs) = (p.c, p.c_rs, p.c_cs);
    let ep = p.ep;
    let mut acc = [T::ZERO; CHUNK];
    for j0 in (0..n).step_by(CHUNK) {
        let w = CHUNK.min(n - j0);
        let acc = &mut acc[..w];
        for i in 0..m {
            acc.fill(T::ZERO);
            for q in 0..k {
                let a_iq = *a.at(i, q);
                let b_row = b.at(q, j0);
                if b.cs == 1 {
                    let b_row = core::slice::from_raw_parts(b_row, w);
                    for (acc, &b) in acc.iter_mut().zip(b_row) {
                        *acc = *acc + a_iq * b;
                    }
                } else {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = *acc + a_iq * *b_row.offset(j as isize * b.cs);
                    }
                }
            }
            for (j, &x) in acc.iter().enumerate() {
                let (i, j) = (i, j0 + j);
                ep.store_at(x, c.offset(i as isize * c_rs + j as isize * c_cs), i, j, fma);
            }
        }
    }
    sums::add_up(p);
}

#[cfg(test)]
mod tests {
    use super::column_calls;

    #[test]
    fn column_calls_cover_each_row_once_full_tiles_first() {
        for mr in [4usize, 6, 8] {
            for m in 1usize..40 {
                let panels = m.div_ceil(mr);
                for q0 in 0..panels {
                    for q1 in q0 + 1..=panels {
                        let mut next = q0 * mr;
                        for (i0, tiles, rows) in column_calls(q0, q1, m, mr) {
                            assert_eq!(i0, next, "m {m} mr {mr} panels {q0}..{q1}");
                            assert!(rows == mr || (tiles == 1 && 0 < rows && rows < mr));
                            next += tiles * rows;
                        }
                        assert_eq!(next, (q1 * mr).min(m), "m {m} mr {mr} panels {q0}..{q1}");
                    }
                }
            }
        }
    }
}
