//! aarch64 NEON kernels (NEON is part of the aarch64 baseline, so no run-time check is needed).
//!
//! 32 q registers: f32 8 × 12 (24 accumulators, 3 for B, 1 broadcast), f64 8 × 6 likewise.

use core::arch::aarch64::*;

use super::{
    load_first_through_buffer, microkernel, microkernel_in_place, store_first_through_buffer, InPlaceOperands, MicroKernel, Simd, TileStore,
};
use crate::gemm::Isa;

#[derive(Clone, Copy)]
pub(crate) struct NeonF32;
#[derive(Clone, Copy)]
pub(crate) struct NeonF64;

// SAFETY (all methods): NEON is mandatory on aarch64, so these intrinsics are always available.

impl Simd for NeonF32 {
    type T = f32;
    type V = float32x4_t;
    const LANES: usize = 4;
    const REGISTERS: usize = 32;
    type Mask = usize;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> usize {
        count
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, count: usize) -> float32x4_t {
        load_first_through_buffer::<Self>(p, count)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: float32x4_t, count: usize) {
        store_first_through_buffer::<Self>(p, v, count)
    }
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // FMAX would turn max(0, NaN) into NaN but max(+0, -0) into +0; select keeps a > b ? a : b.
        vbslq_f32(vcgtq_f32(a, b), a, b)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Simd for NeonF64 {
    type T = f64;
    type V = float64x2_t;
    const LANES: usize = 2;
    const REGISTERS: usize = 32;
    type Mask = usize;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> usize {
        count
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f64, count: usize) -> float64x2_t {
        load_first_through_buffer::<Self>(p, count)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f64, v: float64x2_t, count: usize) {
        store_first_through_buffer::<Self>(p, v, count)
    }
    #[inline(always)]
    unsafe fn zero() -> float64x2_t {
        vdupq_n_f64(0.0)
    }
    #[inline(always)]
    unsafe fn splat(x: f64) -> float64x2_t {
        vdupq_n_f64(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> float64x2_t {
        vld1q_f64(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: float64x2_t) {
        vst1q_f64(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: float64x2_t, b: float64x2_t, c: float64x2_t) -> float64x2_t {
        vfmaq_f64(c, a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float64x2_t, b: float64x2_t) -> float64x2_t {
        vmulq_f64(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: float64x2_t, b: float64x2_t) -> float64x2_t {
        vaddq_f64(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: float64x2_t, b: float64x2_t) -> float64x2_t {
        vbslq_f64(vcgtq_f64(a, b), a, b)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
}

unsafe fn neon_f32(kc: usize, a: *const f32, b: *const f32, st: &TileStore<f32>) {
    microkernel::<NeonF32, 8, 3>(kc, a, b, st)
}

unsafe fn neon_f64(kc: usize, a: *const f64, b: *const f64, st: &TileStore<f64>) {
    microkernel::<NeonF64, 8, 3>(kc, a, b, st)
}

unsafe fn neon_f32_in_place(kc: usize, src: &InPlaceOperands<f32>, st: &TileStore<f32>) {
    microkernel_in_place::<NeonF32, 8, 3>(kc, src, st)
}

unsafe fn neon_f64_in_place(kc: usize, src: &InPlaceOperands<f64>, st: &TileStore<f64>) {
    microkernel_in_place::<NeonF64, 8, 3>(kc, src, st)
}

pub(crate) const NEON_F32: MicroKernel<f32> = MicroKernel { isa: Isa::Neon, mr: 8, nr: 12, run: neon_f32, run_in_place: neon_f32_in_place };
pub(crate) const NEON_F64: MicroKernel<f64> = MicroKernel { isa: Isa::Neon, mr: 8, nr: 6, run: neon_f64, run_in_place: neon_f64_in_place };
