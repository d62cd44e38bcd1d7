//! The row sums of A and the column sums of B that a GEMM can return beside C (the bias
//! gradient of a linear layer is the column sums of grad_y).
//!
//! The packed path adds them up while it packs (pack.rs); the other paths call [`add_up`].
//! Both add each sum's terms in k order, so every path gives the same bits.

use super::dispatch::HasKernels;
use super::problem::Problem;

/// Writes the requested sums of `p`'s operands, each added in k order.
///
/// # Safety
/// As for [`Problem::run`]: the operands are readable, the sums writable.
pub(super) unsafe fn add_up<T: HasKernels>(p: &Problem<T>) {
    let (m, n, k, a, b) = (p.m, p.n, p.k, p.a, p.b);
    if let Some(sums) = p.a_row_sums {
        for i in 0..m {
            let mut s = T::ZERO;
            for q in 0..k {
                s = s + *a.at(i, q);
            }
            *sums.add(i) = s;
        }
    }
    if let Some(sums) = p.b_col_sums {
        for j in 0..n {
            *sums.add(j) = T::ZERO;
        }
        for q in 0..k {
            for j in 0..n {
                *sums.add(j) = *sums.add(j) + *b.at(q, j);
            }
        }
    }
}
