//! AVX2 packing for f32 and f64 (used by the AVX2 and AVX-512 paths): a vector copy when a
//! panel's lanes are contiguous, an in-register transposition when its k steps are.
//!
//! The column or row sums are added lane by lane in k order, exactly as the scalar path adds
//! them, so the sums do not depend on which path packed the panel.

use core::arch::x86_64::*;

use super::Panel;

/// [`super::pack_panel`] for f32; false if no fast path fits these strides (nothing written).
///
/// SAFETY: as for `pack_panel`, and the CPU has AVX2.
pub(super) unsafe fn pack_panel_f32(width: usize, kc: usize, src: Panel<f32>, dst: *mut f32, sums: Option<*mut f32>) -> bool {
    if src.lane_stride == 1 {
        copy_f32(width, kc, src, dst, sums);
        true
    } else if src.k_stride == 1 && width.is_multiple_of(8) {
        transpose_f32(width, kc, src, dst, sums);
        true
    } else {
        false
    }
}

/// [`super::pack_panel`] for f64; false if no fast path fits these strides (nothing written).
///
/// SAFETY: as for `pack_panel`, and the CPU has AVX2.
pub(super) unsafe fn pack_panel_f64(width: usize, kc: usize, src: Panel<f64>, dst: *mut f64, sums: Option<*mut f64>) -> bool {
    if src.lane_stride == 1 {
        copy_f64(width, kc, src, dst, sums);
        true
    } else if src.k_stride == 1 && width.is_multiple_of(4) {
        transpose_f64(width, kc, src, dst, sums);
        true
    } else {
        false
    }
}

/// Lanes contiguous: one row of the panel per k step, copied 8 lanes at a time.
#[target_feature(enable = "avx2")]
unsafe fn copy_f32(width: usize, kc: usize, src: Panel<f32>, dst: *mut f32, sums: Option<*mut f32>) {
    let lanes = src.lanes;
    let whole = lanes / 8 * 8;
    for p in 0..kc {
        let from = src.at(0, p);
        let to = dst.add(p * width);
        for l in (0..whole).step_by(8) {
            let v = _mm256_loadu_ps(from.add(l));
            _mm256_storeu_ps(to.add(l), v);
            if let Some(sums) = sums {
                _mm256_storeu_ps(sums.add(l), _mm256_add_ps(_mm256_loadu_ps(sums.add(l)), v));
            }
        }
        for l in whole..lanes {
            let x = *from.add(l);
            *to.add(l) = x;
            if let Some(sums) = sums {
                *sums.add(l) += x;
            }
        }
        for l in lanes..width {
            *to.add(l) = 0.0;
        }
    }
}

/// Lanes contiguous: one row of the panel per k step, copied 4 lanes at a time.
#[target_feature(enable = "avx2")]
unsafe fn copy_f64(width: usize, kc: usize, src: Panel<f64>, dst: *mut f64, sums: Option<*mut f64>) {
    let lanes = src.lanes;
    let whole = lanes / 4 * 4;
    for p in 0..kc {
        let from = src.at(0, p);
        let to = dst.add(p * width);
        for l in (0..whole).step_by(4) {
            let v = _mm256_loadu_pd(from.add(l));
            _mm256_storeu_pd(to.add(l), v);
            if let Some(sums) = sums {
                _mm256_storeu_pd(sums.add(l), _mm256_add_pd(_mm256_loadu_pd(sums.add(l)), v));
            }
        }
        for l in whole..lanes {
            let x = *from.add(l);
            *to.add(l) = x;
            if let Some(sums) = sums {
                *sums.add(l) += x;
            }
        }
        for l in lanes..width {
            *to.add(l) = 0.0;
        }
    }
}

/// k contiguous: 8 lanes × 8 k steps loaded as 8 vectors along k, transposed in registers,
/// stored as 8 panel rows. `width` is a multiple of 8; lanes past `src.lanes` read as zero.
#[target_feature(enable = "avx2")]
unsafe fn transpose_f32(width: usize, kc: usize, src: Panel<f32>, dst: *mut f32, sums: Option<*mut f32>) {
    let whole_k = kc / 8 * 8;
    for l0 in (0..width).step_by(8) {
        let real = src.lanes.saturating_sub(l0).min(8);
        let mut acc = [0.0f32; 8];
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(sums.add(l0), acc.as_mut_ptr(), real);
        }
        let mut acc_v = _mm256_loadu_ps(acc.as_ptr());
        for p0 in (0..whole_k).step_by(8) {
            let mut r = [_mm256_setzero_ps(); 8];
            if real == 8 {
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm256_loadu_ps(src.at(l0 + i, p0));
                }
            } else {
                for (i, r) in r.iter_mut().enumerate().take(real) {
                    *r = _mm256_loadu_ps(src.at(l0 + i, p0));
                }
            }
            let t = transpose_8x8(r);
            for (p, &row) in t.iter().enumerate() {
                _mm256_storeu_ps(dst.add((p0 + p) * width + l0), row);
                if sums.is_some() {
                    acc_v = _mm256_add_ps(acc_v, row);
                }
            }
        }
        _mm256_storeu_ps(acc.as_mut_ptr(), acc_v);
        for p in whole_k..kc {
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = if i < real { *src.at(l0 + i, p) } else { 0.0 };
                *dst.add(p * width + l0 + i) = x;
                *acc += x;
            }
        }
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(acc.as_ptr(), sums.add(l0), real);
        }
    }
}

/// k contiguous: 4 lanes × 4 k steps per register tile (see [`transpose_f32`]).
#[target_feature(enable = "avx2")]
unsafe fn transpose_f64(width: usize, kc: usize, src: Panel<f64>, dst: *mut f64, sums: Option<*mut f64>) {
    let whole_k = kc / 4 * 4;
    for l0 in (0..width).step_by(4) {
        let real = src.lanes.saturating_sub(l0).min(4);
        let mut acc = [0.0f64; 4];
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(sums.add(l0), acc.as_mut_ptr(), real);
        }
        let mut acc_v = _mm256_loadu_pd(acc.as_ptr());
        for p0 in (0..whole_k).step_by(4) {
            let mut r = [_mm256_setzero_pd(); 4];
            if real == 4 {
                for (i, r) in r.iter_mut().enumerate() {
                    *r = _mm256_loadu_pd(src.at(l0 + i, p0));
                }
            } else {
                for (i, r) in r.iter_mut().enumerate().take(real) {
                    *r = _mm256_loadu_pd(src.at(l0 + i, p0));
                }
            }
            let t = transpose_4x4(r);
            for (p, &row) in t.iter().enumerate() {
                _mm256_storeu_pd(dst.add((p0 + p) * width + l0), row);
                if sums.is_some() {
                    acc_v = _mm256_add_pd(acc_v, row);
                }
            }
        }
        _mm256_storeu_pd(acc.as_mut_ptr(), acc_v);
        for p in whole_k..kc {
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = if i < real { *src.at(l0 + i, p) } else { 0.0 };
                *dst.add(p * width + l0 + i) = x;
                *acc += x;
            }
        }
        if let Some(sums) = sums {
            core::ptr::copy_nonoverlapping(acc.as_ptr(), sums.add(l0), real);
        }
    }
}

/// `out[j][i] = r[i][j]` for an 8 × 8 f32 tile: interleave pairs, then quads, then halves.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
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

/// `out[j][i] = r[i][j]` for a 4 × 4 f64 tile.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_4x4(r: [__m256d; 4]) -> [__m256d; 4] {
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
