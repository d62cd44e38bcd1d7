//! Batches: `C[idx] = A[idx] B[idx]` over batch dimensions, each operand with its own batch
//! strides (0 where it broadcasts).

use super::dispatch::HasKernels;
use super::plan::PARALLEL_MIN_WORK;
use super::view::{MatMut, MatRef};
use super::{Gemm, ShapeError};
use crate::threads;

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
    fn offsets(&self, mut flat: usize) -> (isize, isize, isize) {
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

/// Batched `C = A B` (alpha = 1, beta = 0). Small products run one per thread; large ones one
/// after another, each using all threads.
///
/// # Safety
/// For every batch index the offset views are valid as for [`MatRef::from_raw_parts`]
/// and [`MatMut::from_raw_parts`], and no two batch indices share an element of C.
pub unsafe fn gemm_batched<T: HasKernels>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    mut c: MatMut<'_, T>,
    batch: Batch<'_>,
) -> Result<(), ShapeError> {
    let nd = batch.shape.len();
    if batch.a_strides.len() != nd || batch.b_strides.len() != nd || batch.c_strides.len() != nd {
        return Err(ShapeError("batch strides must have one entry per batch dimension".into()));
    }
    // Validate the shapes once, on the first product.
    Gemm::new(a, b, c.reborrow())?;
    let count = batch.len();
    let one = |t: usize, parallel: bool| {
        let (oa, ob, oc) = batch.offsets(t);
        Gemm::new(a.shifted(oa), b.shifted(ob), c.shifted(oc)).expect("shapes checked above").parallel(parallel).run();
    };
    let work = c.rows * c.cols * a.cols;
    if count > 1 && work < PARALLEL_MIN_WORK {
        // Distinct batch indices write distinct matrices of C (the caller's promise).
        threads::team().run_ranges(count, 4, |range| range.for_each(|t| one(t, false)));
    } else {
        (0..count).for_each(|t| one(t, true));
    }
    Ok(())
}
