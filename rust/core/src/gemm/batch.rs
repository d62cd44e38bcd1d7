//! Batches: `C[idx] = A[idx] B[idx]` over batch dimensions, each operand with its own batch
//! strides (0 where it broadcasts).

use super::dispatch::HasKernels;
use super::plan::{plan, Path, Plan};
use super::view::{MatMut, MatRef};
use super::{small, tiny, Gemm, Precision, ShapeError};
use crate::threads::{self, Team};

/// The batch loop around [`Gemm`]: `C[idx] = A[idx] B[idx]` for every index of `shape`, each
/// operand's matrices `strides[d]` elements apart along batch dimension `d` (0 to broadcast).
#[derive(Clone, Copy, Debug)]
pub struct Batch<'s> {
    pub shape: &'s [usize],
    pub a_strides: &'s [isize],
    pub b_strides: &'s [isize],
    pub c_strides: &'s [isize],
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Element offsets of the `flat`-th matrix of A, B and C (row-major order over `shape`).
    #[inline(always)]
    fn offsets(&self, mut flat: usize) -> (isize, isize, isize) {
        if let ([_], [a], [b], [c]) = (self.shape, self.a_strides, self.b_strides, self.c_strides) {
            let t = flat as isize;
            return (t * a, t * b, t * c); // (no divisions for the common one-dimensional batch)
        }
        let (mut a, mut b, mut c) = (0, 0, 0);
        for d in (0..self.shape.len()).rev() {
            let i = (flat % self.shape[d]) as isize;
            flat /= self.shape[d];
            a += i * self.a_strides[d];
            b += i * self.b_strides[d];
            c += i * self.c_strides[d];
        }
        (a, b, c)
    }
}

/// Batched `C = A B` (alpha = 1, beta = 0): [`gemm_batched_beta`] with beta = 0.
///
/// # Safety
/// As for [`gemm_batched_beta`].
pub unsafe fn gemm_batched<T: HasKernels>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: MatMut<'_, T>,
    batch: Batch<'_>,
    precision: Precision,
) -> Result<(), ShapeError> {
    gemm_batched_beta(a, b, c, batch, precision, T::ZERO)
}

/// Batched `C = A B + beta C` (beta = 1 accumulates a product into C, as a sum over blocks of
/// the contracted dimension does), planned once for all the matrices. A B shared by
/// every matrix, with A's and C's matrices stacked along their rows, is one product of all
/// their rows; otherwise small products run one per thread and large ones one after
/// another, each using all threads.
///
/// # Safety
/// For every batch index the offset views are valid as for [`MatRef::from_raw_parts`]
/// and [`MatMut::from_raw_parts`], and no two batch indices share an element of C.
pub unsafe fn gemm_batched_beta<T: HasKernels>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    mut c: MatMut<'_, T>,
    batch: Batch<'_>,
    precision: Precision,
    beta: T,
) -> Result<(), ShapeError> {
    let nd = batch.shape.len();
    if batch.a_strides.len() != nd || batch.b_strides.len() != nd || batch.c_strides.len() != nd {
        return Err(ShapeError("batch strides must have one entry per batch dimension".into()));
    }
    // Validate the shapes once, on the first product.
    let (problem, isa) = Gemm::new(a, b, c.reborrow())?.precision(precision).beta(beta).into_problem();
    let count = batch.len();
    if count == 0 {
        return Ok(());
    }
    if let Some((a_rows, c_rows)) = stacked_rows(a, &c, batch) {
        // SAFETY: the rows of every matrix of A and C, which the caller vouches for.
        let (a_all, c_all) =
            (MatRef::from_raw_parts(a.ptr, a_rows, a.cols, a.rs, a.cs), MatMut::from_raw_parts(c.ptr, c_rows, c.cols, c.rs, c.cs));
        Gemm::new(a_all, b, c_all)?.precision(precision).beta(beta).run();
        return Ok(());
    }
    if count > 1 && tiny::fits(&problem) {
        // Distinct batch indices write distinct matrices of C (the caller's promise).
        let work_per_task = (16 * 16 * 16 / (problem.m * problem.n * problem.k)).max(1);
        threads::team().run_ranges(count, work_per_task, |range| tiny::tiny_batch(&problem, isa, range, |t| batch.offsets(t)));
        return Ok(());
    }
    let each = |t: usize, plan: &Plan<T>, team: &Team| {
        let (oa, ob, oc) = batch.offsets(t);
        problem.shifted(oa, ob, oc).run_planned(plan, isa, team)
    };
    let plan = plan(&problem, isa);
    let (kern, kc) = (plan.kernel, plan.blocking.kc);
    if let Path::InPlace(run) = plan.path {
        if problem.k <= kc && !plan.parallel {
            // Distinct batch indices write distinct matrices of C (the caller's promise).
            let work_per_task = (16 * 16 * 16 / (problem.m * problem.n * problem.k)).max(1);
            threads::team()
                .run_ranges(count, work_per_task, |range| small::in_place_batch(&problem, &kern, run, range, |t| batch.offsets(t)));
            return Ok(());
        }
    }
    if plan.parallel || count == 1 {
        let team = threads::team();
        (0..count).for_each(|t| each(t, &plan, if plan.parallel { &team } else { &Team::SERIAL }));
    } else {
        // Distinct batch indices write distinct matrices of C (the caller's promise).
        threads::team().run_ranges(count, 4, |range| range.for_each(|t| each(t, &plan, &Team::SERIAL)));
    }
    Ok(())
}

/// When B is the same matrix for every batch index and the matrices of A and of C follow one
/// another row after row, the numbers of rows of A and of C seen as one matrix each.
fn stacked_rows<T>(a: MatRef<'_, T>, c: &MatMut<'_, T>, batch: Batch<'_>) -> Option<(usize, usize)> {
    let dims = || (0..batch.shape.len()).rev().filter(|&d| batch.shape[d] != 1);
    if dims().any(|d| batch.b_strides[d] != 0) {
        return None;
    }
    let (mut next_a, mut next_c) = (a.rows as isize * a.rs, c.rows as isize * c.rs);
    for d in dims() {
        if batch.a_strides[d] != next_a || batch.c_strides[d] != next_c {
            return None;
        }
        next_a *= batch.shape[d] as isize;
        next_c *= batch.shape[d] as isize;
    }
    let count = batch.len();
    Some((a.rows * count, c.rows * count))
}
