//! AVX2 packing for f32 and f64 (used by the AVX2 and AVX-512 paths): a vector copy when a
//! panel's lanes are contiguous, an in-register transposition when its k steps are.
//!
//! The column or row sums are added lane by lane in k order, exactly as the scalar path adds
//! them, so the sums do not depend on which path packed the panel.

use core::arch::x86_64::*;

use super::super::kernel::x86::{Avx2F32, Avx2F64};
use super::super::kernel::Simd;
use super::Panel;
use crate::element::Element;

/// [`super::pack_panel`] for f32; false if no fast path fits these strides (nothing written).
///
/// SAFETY: as for `pack_panel`, and the CPU has AVX2.
pub(super) unsafe fn pack_panel_f32(width: usize, kc: usize, src: Panel<f32>, dst: *mut f32, sums: Option<*mut f32>) -> bool {
    pack_panel::<Avx2F32, 8>(width, kc, src, dst, sums)
}

/// [`super::pack_panel`] for f64; false if no fast path fits these strides (nothing written).
///
/// SAFETY: as for `pack_panel`, and the CPU has AVX2.
pub(super) unsafe fn pack_panel_f64(width: usize, kc: usize, src: Panel<f64>, dst: *mut f64, sums: Option<*mut f64>) -> bool {
    pack_panel::<Avx2F64, 4>(width, kc, src, dst, sums)
}

/// The in-register transposition of an N × N tile (`out[j][i] = r[i][j]`), for the AVX2
/// vector types of the micro-kernels, whose [`Simd`] methods do the loads and stores here.
/// Only sound to call where AVX2 is enabled: from the `#[target_feature]` functions below.
trait Transpose<const N: usize>: Simd {
    unsafe fn transpose(r: [Self::V; N]) -> [Self::V; N];
}

impl Transpose<8> for Avx2F32 {
    /// Interleave pairs, then quads, then 128-bit halves.
    #[inline(always)]
    unsafe fn transpose(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

impl Transpose<4> for Avx2F64 {
    /// Interleave pairs, then 128-bit halves.
    #[inline(always)]
    unsafe fn transpose(r: [__m256d; 4]) -> [__m256d; 4] {
        let t0 = _mm256_unpacklo_pd(r[0], r[1]);
        let t1 = _mm256_unpackhi_pd(r[0], r[1]);
        let t2 = _mm256_unpacklo_pd(r[2], r[3]);
        let t3 = _mm256_unpackhi_pd(r[2], r[3]);
        [
            _mm256_permute2f128_pd::<0x20>(t0, t2),
            _mm256_permute2f128_pd::<0x20>(t1, t3),
            _mm256_permute2f128_pd::<0x31>(t0, t2),
            _mm256_permute2f128_pd::<0x31>(t1, t3),
        ]
    }
}

#[inline(always)]
unsafe fn pack_panel<Y: Transpose<N>, const N: usize>(
    width: usize,
    kc: usize,
    src: Panel<Y::T>,
    dst: *mut Y::T,
    sums: Option<*mut Y::T>,
) -> bool {
    if src.lane_stride == 1 {
        copy::<Y, N>(width, kc, src, dst, sums);
        true
    } else if src.k_stride == 1 && (width.is_multiple_of(N) || width < N) {
        // (A partial tile after whole ones, f64's MR = 6 as 4 + 2, would need a masked store
        // on every row: slower than the scalar path, docs/measurements.md, "Packing".)
        transpose::<Y, N>(width, kc, src, dst, sums);
        true
    } else {
        false
    }
}

/// Lanes contiguous: one row of the panel per k step, copied N lanes at a time.
#[target_feature(enable = "avx2")]
unsafe fn copy<Y: Transpose<N>, const N: usize>(width: usize, kc: usize, src: Panel<Y::T>, dst: *mut Y::T, sums: Option<*mut Y::T>) {
    let lanes = src.lanes;
    let whole = lanes / N * N;
    for p in 0..kc {
        let from = src.at(0, p);
        let to = dst.add(p * width);
        for l in (0..whole).step_by(N) {
            let v = Y::load(from.add(l));
            Y::store(to.add(l), v);
            if let Some(sums) = sums {
                Y::store(sums.add(l), Y::add(Y::load(sums.add(l)), v));
            }
        }
        for l in whole..lanes {
            let x = *from.add(l);
            *to.add(l) = x;
            if let Some(sums) = sums {
                *sums.add(l) = *sums.add(l) + x;
            }
        }
        for l in lanes..width {
            *to.add(l) = Y::T::ZERO;
        }
    }
}

/// k contiguous: N lanes × N k steps loaded as N vectors along k, transposed in registers,
/// stored as N panel rows. Lanes past `src.lanes` read as zero. `width` is a multiple of N,
/// or less than N (f32's MR = 6 on AVX2): then the one tile is narrower than the vectors.
#[target_feature(enable = "avx2")]
unsafe fn transpose<Y: Transpose<N>, const N: usize>(width: usize, kc: usize, src: Panel<Y::T>, dst: *mut Y::T, sums: Option<*mut Y::T>) {
    let whole_k = kc / N * N;
    for l0 in (0..width).step_by(N) {
        // Lanes of this tile inside the panel, and those of them read from the source.
        let cols = (width - l0).min(N);
        let real = src.lanes.saturating_sub(l0).min(cols);
        // This tile's sums (none for a tile of padding only, which has no sums to point at).
        let sums = sums.filter(|_| real > 0).map(|s| s.add(l0));
        let mut acc = [Y::T::ZERO; N];
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(sums, acc.as_mut_ptr(), real);
        }
        let mut acc_v = Y::load(acc.as_ptr());
        for p0 in (0..whole_k).step_by(N) {
            let mut r = [Y::zero(); N];
            if real == N {
                for (i, r) in r.iter_mut().enumerate() {
                    *r = Y::load(src.at(l0 + i, p0));
                }
            } else {
                for (i, r) in r.iter_mut().enumerate().take(real) {
                    *r = Y::load(src.at(l0 + i, p0));
                }
            }
            for (p, &row) in Y::transpose(r).iter().enumerate() {
                let to = dst.add((p0 + p) * width + l0);
                // A narrow tile's extra lanes spill into the start of the next panel row,
                // which is stored after this one; only the panel's last row needs the
                // (slower) masked store.
                if cols == N || p0 + p + 1 < kc {
                    Y::store(to, row);
                } else {
                    Y::store_masked(to, row, Y::first_lanes(cols));
                }
                if sums.is_some() {
                    acc_v = Y::add(acc_v, row);
                }
            }
        }
        Y::store(acc.as_mut_ptr(), acc_v);
        for p in whole_k..kc {
            for (i, acc) in acc.iter_mut().enumerate().take(cols) {
                let x = if i < real { *src.at(l0 + i, p) } else { Y::T::ZERO };
                *dst.add(p * width + l0 + i) = x;
                *acc = *acc + x;
            }
        }
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(acc.as_ptr(), sums, real);
        }
    }
}
