//! The direct path for tiny products: no packing, no scratch buffers, no threads.
//!
//! For a handful of elements the packed path's fixed costs (buffers, packing, edge tiles)
//! exceed the arithmetic. Here each row of C is accumulated in a stack buffer as
//! `acc += A[i,p] * B[p,:]`, a loop the compiler vectorizes when B's rows are contiguous.

use super::{HasKernels, Isa, Problem};

/// Columns of C accumulated at a time (a few KiB of stack).
const CHUNK: usize = 64;

pub(super) unsafe fn gemm_direct<T: HasKernels>(p: &Problem<T>, isa: Isa) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx2) {
        // SAFETY: dispatch only selects these ISAs after detecting AVX2 and FMA.
        return direct_avx2(p);
    }
    let _ = isa;
    direct(p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_avx2<T: HasKernels>(p: &Problem<T>) {
    direct(p)
}

#[inline(always)]
unsafe fn direct<T: HasKernels>(p: &Problem<T>) {
    // Copied out so that stores through C cannot force them to be re-read.
    let (m, n, k) = (p.m, p.n, p.k);
    let (a, b) = (p.a, p.b);
    let (c, c_rs, c_cs) = (p.c, p.c_rs, p.c_cs);
    let (alpha, beta, relu) = (p.alpha, p.beta, p.relu);
    let (bias, bias_rs, bias_cs) = (p.bias, p.bias_rs, p.bias_cs);
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
            let c_row = c.offset(i as isize * c_rs + j0 as isize * c_cs);
            let bias_row = bias.wrapping_offset(i as isize * bias_rs + j0 as isize * bias_cs);
            for (j, &x) in acc.iter().enumerate() {
                let c = c_row.offset(j as isize * c_cs);
                let mut x = if alpha != T::ONE { alpha * x } else { x };
                if beta != T::ZERO {
                    x = beta * *c + x;
                }
                if !bias.is_null() {
                    x = x + *bias_row.offset(j as isize * bias_cs);
                }
                if relu && T::ZERO > x {
                    x = T::ZERO;
                }
                *c = x;
            }
        }
    }
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
