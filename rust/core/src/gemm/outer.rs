//! Outer products, k = 1 (as in the linear layer's weight gradient at a batch of one):
//! `C[i, j] = a[i] b[j]` through the epilogue, a row of C at a time as wide vectors, with the
//! same operation (one fused multiply-add onto zero) as the micro-kernels, so the same bits.
//! Memory takes the stores; the threads split the rows.

use super::dispatch::{HasKernels, Isa};
use super::epilogue::Epilogue;
use super::kernel::{Simd, SimdElement, SimdWork, VectorEpilogue};
use super::problem::Problem;
use super::sums;
use crate::element::Element;
use crate::threads::Team;

/// Rows of C per task when the threads split a product.
const TASK_ROWS: usize = 16;

/// `C[i, j] = a[i] b[j]`, C's rows and b contiguous.
#[derive(Clone, Copy)]
pub(crate) struct Outer<T> {
    pub a: *const T,
    pub a_stride: isize,
    pub b: *const T,
    pub n: usize,
    pub c: *mut T,
    pub c_rs: isize,
    pub ep: Epilogue<T>,
}

// SAFETY: read by the threads of one product, which write disjoint rows of C.
unsafe impl<T: Sync> Sync for Outer<T> {}

impl<T: Element> Outer<T> {
    /// Whether `p` is an outer product this path takes (C's rows, B's row and the epilogue's
    /// operands' rows contiguous).
    pub fn fits(p: &Problem<T>) -> bool {
        p.k == 1 && p.c_cs == 1 && p.b.cs == 1 && p.ep.rows_contiguous()
    }
}

/// Computes the outer product `p` (see [`Outer::fits`]).
///
/// SAFETY: as for [`Problem::run`].
pub(super) unsafe fn outer<T: HasKernels>(p: &Problem<T>, isa: Isa, team: &Team) {
    sums::add_up(p);
    let o = Outer { a: p.a.ptr, a_stride: p.a.rs, b: p.b.ptr, n: p.n, c: p.c, c_rs: p.c_rs, ep: p.ep.for_k_block(true, true) };
    let tasks = p.m.div_ceil(TASK_ROWS);
    let m = p.m;
    team.run_ranges(tasks, 1, |range| outer_on(isa, &o, range.start * TASK_ROWS..(range.end * TASK_ROWS).min(m)))
}

/// Rows `rows` of an outer product, as [`SimdWork`].
struct OuterRows<'a, T> {
    o: &'a Outer<T>,
    rows: core::ops::Range<usize>,
}

impl<T: Element> SimdWork<T> for OuterRows<'_, T> {
    #[inline(always)]
    unsafe fn run<S: Simd<T = T>>(&self) {
        outer_with::<S>(self.o, self.rows.clone())
    }
}

/// [`outer_with`] in the registers of `isa`.
///
/// SAFETY: `o` describes valid operands, `rows` lies within C, `isa` is supported.
unsafe fn outer_on<T: SimdElement>(isa: Isa, o: &Outer<T>, rows: core::ops::Range<usize>) {
    T::run_on(isa, &OuterRows { o, rows })
}

/// Rows `rows` of the outer product, in one ISA's registers.
///
/// SAFETY: as for [`outer_on`], with the ISA's features enabled in the caller.
#[inline(always)]
pub(crate) unsafe fn outer_with<S: Simd>(o: &Outer<S::T>, rows: core::ops::Range<usize>) {
    let lanes = S::LANES;
    let whole = o.n / lanes * lanes;
    let tail = S::first_lanes(o.n - whole);
    let vep = VectorEpilogue::<S>::new(&o.ep);
    for i in rows {
        let ai = S::splat(*o.a.offset(i as isize * o.a_stride));
        let c = o.c.offset(i as isize * o.c_rs);
        let ep = o.ep.from(i, 0);
        let (bias, mask) = (ep.bias, ep.mask);
        for j in (0..whole).step_by(lanes) {
            let x = S::fmadd(ai, S::load(o.b.add(j)), S::zero());
            vep.store(x, c.add(j), bias.at_in_row(0, j as isize), mask.at_in_row(0, j as isize));
        }
        if whole < o.n {
            let x = S::fmadd(ai, S::load_masked(o.b.add(whole), tail), S::zero());
            vep.store_masked(x, c.add(whole), bias.at_in_row(0, whole as isize), mask.at_in_row(0, whole as isize), tail);
        }
    }
}
