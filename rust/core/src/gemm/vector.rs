//! Matrix·vector, vector·matrix and vector·vector products: a C with one row or one column.
//!
//! They are memory-bound, so each reads its matrix once, in place, at the rate memory
//! delivers it, in one of two forms chosen by how the matrix lies:
//!
//! - **dots** (the matrix's rows contiguous along k, as A of a row-major `A x`): each output is
//!   a dot product, four rows at a time sharing each load of x, two vectors of partial sums
//!   per row, added up lane by lane in a fixed order at the end;
//! - **columns** (its columns contiguous along the outputs, as B of a row-major `x B`): the
//!   outputs are accumulated in a buffer in L1, a block of them at a time, adding `x[p]`
//!   times column p for p ascending, six columns per pass, each read front to back.
//!
//! Other strides take a plain loop. Threads split the outputs, never k, so every output is
//! computed by the same operations on any number of threads. The epilogue is applied to each
//! finished output as it is stored.

use super::blocking::{block_to_line, LineAligned};
use super::dispatch::{HasKernels, Isa};
use super::epilogue::Epilogue;
use super::few_rows::pass;
use super::kernel::{Simd, SimdElement, SimdWork, MAX_LANES};
use super::problem::Problem;
use super::sums;
use crate::buffers::with_scratch;
use crate::element::Element;
use crate::threads::Team;

/// `y[i] = Σ_p mat(i, p) x[p]` for `i < outputs`: the product seen from its outputs.
#[derive(Clone, Copy)]
pub(crate) struct Gemv<T> {
    pub outputs: usize,
    pub k: usize,
    /// `mat(i, p)` at `mat + i*mat_is + p*mat_ps`.
    pub mat: *const T,
    pub mat_is: isize,
    pub mat_ps: isize,
    pub x: *const T,
    pub x_stride: isize,
    pub y: *mut T,
    pub y_stride: isize,
    /// The epilogue at `y[0]`; output `i` is its element `(i, 0)` or `(0, i)`: `along_rows`.
    pub ep: Epilogue<T>,
    pub along_rows: bool,
}

// SAFETY: read by the threads of one product, which write disjoint outputs.
unsafe impl<T: Sync> Sync for Gemv<T> {}

impl<T: HasKernels> Gemv<T> {
    /// The product of `p` (one of m and n is 1) seen from its outputs.
    pub fn of(p: &Problem<T>) -> Gemv<T> {
        let ep = p.ep.for_k_block(true, true);
        if p.n == 1 {
            // y = A x: outputs along C's column, A's rows, x = B's column.
            let (a, b) = (p.a, p.b);
            Gemv {
                outputs: p.m,
                k: p.k,
                mat: a.ptr,
                mat_is: a.rs,
                mat_ps: a.cs,
                x: b.ptr,
                x_stride: b.rs,
                y: p.c,
                y_stride: p.c_rs,
                ep,
                along_rows: true,
            }
        } else {
            // y = x B: outputs along C's row, B's columns, x = A's row.
            let (a, b) = (p.a, p.b);
            Gemv {
                outputs: p.n,
                k: p.k,
                mat: b.ptr,
                mat_is: b.cs,
                mat_ps: b.rs,
                x: a.ptr,
                x_stride: a.cs,
                y: p.c,
                y_stride: p.c_cs,
                ep,
                along_rows: false,
            }
        }
    }
}

impl<T: Element> Gemv<T> {
    /// Stores output `i` (its finished sum `x`) through the epilogue.
    #[inline(always)]
    unsafe fn store(&self, i: usize, x: T, fma: impl Fn(T, T, T) -> T) {
        let (r, c) = if self.along_rows { (i, 0) } else { (0, i) };
        self.ep.store_at(x, self.y.offset(i as isize * self.y_stride), r, c, fma)
    }
}

/// Outputs per task when the threads split a product (a multiple of every block).
const TASK_OUTPUTS: usize = 64;

/// Computes `p` (m or n is 1, k > 0) as a vector product.
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn gemv<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    sums::add_up(p);
    let g = Gemv::of(p);
    let tasks = g.outputs.div_ceil(TASK_OUTPUTS);
    let run = |range: core::ops::Range<usize>| {
        let (i0, i1) = (range.start * TASK_OUTPUTS, (range.end * TASK_OUTPUTS).min(g.outputs));
        gemv_on(isa, &g, i0..i1)
    };
    if g.mat_ps == 1 && g.x_stride != 1 && g.k > 1 {
        // The dots form reads x as vectors: a contiguous copy, once (k elements).
        with_scratch::<T, _>(g.k, |x| {
            for (q, x) in x.iter_mut().enumerate() {
                *x = *g.x.offset(q as isize * g.x_stride);
            }
            let g = Gemv { x: x.as_ptr(), x_stride: 1, ..g };
            let run = |range: core::ops::Range<usize>| {
                let (i0, i1) = (range.start * TASK_OUTPUTS, (range.end * TASK_OUTPUTS).min(g.outputs));
                gemv_on(isa, &g, i0..i1)
            };
            team.run_ranges(tasks, 1, run)
        })
    } else {
        team.run_ranges(tasks, 1, run)
    }
}

/// Outputs `rows` of a product, as [`SimdWork`].
struct GemvRows<'a, T> {
    g: &'a Gemv<T>,
    rows: core::ops::Range<usize>,
}

impl<T: Element> SimdWork<T> for GemvRows<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        gemv_with::<S>(self.g, self.rows.clone())
    }
}

/// [`gemv_with`] in the registers of `isa`, for outputs `rows` of `g`.
///
/// SAFETY: `g` describes valid operands, `rows` lies within its outputs, `isa` is supported.
unsafe fn gemv_on<T: SimdElement>(isa: Isa, g: &Gemv<T>, rows: core::ops::Range<usize>) {
    T::run_on(isa, &GemvRows { g, rows })
}

/// The vector products of one ISA, written against its [`Simd`] type.
///
/// SAFETY (both): `g` describes valid operands; `rows` lies within `0..g.outputs`; the ISA's
/// features are enabled in the caller (a `#[target_feature]` function).
#[inline(always)]
pub(crate) unsafe fn gemv_with<S: Simd>(g: &Gemv<S::T>, rows: core::ops::Range<usize>) {
    let fma = |a, b, c| S::fmadd_scalar(a, b, c);
    if g.mat_ps == 1 && g.x_stride == 1 {
        dots::<S>(g, rows, fma)
    } else if g.mat_is == 1 {
        columns::<S>(g, rows, fma)
    } else {
        for i in rows {
            let mut s = <S::T as Element>::ZERO;
            for q in 0..g.k as isize {
                s = fma(*g.mat.offset(i as isize * g.mat_is + q * g.mat_ps), *g.x.offset(q * g.x_stride), s);
            }
            g.store(i, s, fma);
        }
    }
}

/// The lanes of `v` added pairwise, in the same order for every output.
#[inline(always)]
pub(super) unsafe fn sum_lanes<S: Simd>(v: S::V) -> S::T {
    let mut lanes = [<S::T as Element>::ZERO; 16];
    S::store(lanes.as_mut_ptr(), v);
    let mut width = S::LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] = lanes[l] + lanes[l + width];
        }
    }
    lanes[0]
}

/// Rows sharing each load of x in the dots form.
const DOT_ROWS: usize = 4;

/// The dots form: rows of the matrix and x contiguous along k.
#[inline(always)]
unsafe fn dots<S: Simd>(g: &Gemv<S::T>, rows: core::ops::Range<usize>, fma: impl Fn(S::T, S::T, S::T) -> S::T + Copy) {
    let lanes = S::LANES;
    let whole = g.k / (2 * lanes) * (2 * lanes);
    let tail = g.k - whole;
    let row = |i: usize| g.mat.offset(i as isize * g.mat_is);
    let mut i = rows.start;
    while i < rows.end {
        let count = DOT_ROWS.min(rows.end - i);
        // Rows past the block's end repeat its last row (read, never stored).
        let r: [*const S::T; DOT_ROWS] = core::array::from_fn(|t| row(i + t.min(count - 1)));
        let mut acc = [[S::zero(); 2]; DOT_ROWS];
        for p in (0..whole).step_by(2 * lanes) {
            let (x0, x1) = (S::load(g.x.add(p)), S::load(g.x.add(p + lanes)));
            for (acc, r) in acc.iter_mut().zip(r) {
                acc[0] = S::fmadd(S::load(r.add(p)), x0, acc[0]);
                acc[1] = S::fmadd(S::load(r.add(p + lanes)), x1, acc[1]);
            }
        }
        if tail > 0 {
            let (m0, m1) = (S::first_lanes(tail.min(lanes)), S::first_lanes(tail.saturating_sub(lanes)));
            let (x0, x1) = (S::load_masked(g.x.add(whole), m0), S::load_masked(g.x.add(whole + lanes), m1));
            for (acc, r) in acc.iter_mut().zip(r) {
                acc[0] = S::fmadd(S::load_masked(r.add(whole), m0), x0, acc[0]);
                acc[1] = S::fmadd(S::load_masked(r.add(whole + lanes), m1), x1, acc[1]);
            }
        }
        for (t, acc) in acc.iter().enumerate().take(count) {
            g.store(i + t, sum_lanes::<S>(S::add(acc[0], acc[1])), fma);
        }
        i += count;
    }
}

/// Outputs the columns form accumulates at a time (in a buffer that stays in L1).
const COLUMN_BLOCK: usize = 1024;
/// Columns added per pass over the buffer, a constant for the passes' whole groups (k's last
/// few columns pass one at a time), so that each pass is unrolled with its `x[p]` splats in
/// registers (a group counted at run time, as before, read vec@mat 1024² f32 at 0.83–0.9×
/// NumPy). Zen 3, AVX2, against that build: 4 columns 1.12–1.33×, 6 1.16–1.43×, 8
/// 1.01–1.28×, 12 0.95–1.14×, 16 0.7× (18 vectors for 16 registers); docs/measurements.md.
const COLUMN_GROUP: usize = 6;

/// The columns form: the matrix's columns contiguous along the outputs. The outputs of a
/// block are accumulated in a buffer, a group of columns per pass, so each column is read
/// front to back (a row of a row-major B, as the prefetchers like it); each output still adds
/// `x[p]` times its element of column p for p ascending, fused, whatever the block or group.
/// It is few_rows.rs's pass for one row of C (`x` its row of A, the matrix its B); the first
/// block starts with a vector up to the matrix's next cache line, so the later ones load
/// whole lines (blocking.rs, `block_to_line`), and the buffer sits on lines too.
#[inline(always)]
unsafe fn columns<S: Simd>(g: &Gemv<S::T>, rows: core::ops::Range<usize>, fma: impl Fn(S::T, S::T, S::T) -> S::T + Copy) {
    let lanes = S::LANES;
    let k = g.k;
    let mut buf = LineAligned([<S::T as Element>::ZERO; COLUMN_BLOCK + MAX_LANES]);
    let x = [g.x];
    let mut i = rows.start;
    while i < rows.end {
        let base = g.mat.add(i);
        let (lead, count) = block_to_line(base, lanes, COLUMN_BLOCK, rows.end - i);
        let y = buf.0.as_mut_ptr().add((lanes - lead) % lanes);
        let mut q = 0;
        while q + COLUMN_GROUP <= k {
            pass::<S, 1, COLUMN_GROUP>(&x, g.x_stride, base, g.mat_ps, q, y, COLUMN_BLOCK, count, lead);
            q += COLUMN_GROUP;
        }
        while q < k {
            pass::<S, 1, 1>(&x, g.x_stride, base, g.mat_ps, q, y, COLUMN_BLOCK, count, lead);
            q += 1;
        }
        for t in 0..count {
            g.store(i + t, *y.add(t), fma);
        }
        i += count;
    }
}
