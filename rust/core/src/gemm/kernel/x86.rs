//! x86-64 kernels: AVX-512F and AVX2+FMA, f32 and f64.
//!
//! Register blocks (rows × columns of C, vectors along the columns so row-major C stores are
//! whole vectors):
//! - AVX-512 (32 zmm): f32 8 × 48, f64 8 × 24 — 24 accumulators, 3 for B, 1 broadcast:
//!   11 loads per 24 FMAs (against 12 × 32 / 14 × 16: docs/measurements.md, "Kernels").
//! - AVX-512 narrow: f32 8 × 32, f64 8 × 16 — 16 accumulators, 2 for B, for a narrow C that the
//!   wide blocks would pad (n = 64 is 96 columns at NR = 48): `HasKernels::microkernel_for`.
//!   Same MR, so the same KC and bit-identical results; slower per FLOP, faster overall there.
//! - AVX2 (16 ymm):    f32  6 × 16, f64  6 × 8  — 12 accumulators, 2 for B, 1 broadcast.

use core::arch::x86_64::*;

use super::{microkernel, microkernel_in_place, InPlaceOperands, MicroKernel, Simd, TileStore};
use crate::gemm::Isa;

#[derive(Clone, Copy)]
pub(crate) struct Avx512F32;
#[derive(Clone, Copy)]
pub(crate) struct Avx512F64;
#[derive(Clone, Copy)]
pub(crate) struct Avx2F32;
#[derive(Clone, Copy)]
pub(crate) struct Avx2F64;

// Each impl below wraps one intrinsic per method. SAFETY (all of them): the methods are only
// called from `#[target_feature]` functions (the kernels at the bottom of this file, and the
// AVX2 packing in gemm/pack/x86.rs), which dispatch.rs selects only after
// `is_x86_feature_detected!` confirmed those features.

impl Simd for Avx512F32 {
    type T = f32;
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // MAXPS returns its second operand when either is NaN or both are zeros, i.e. a > b ? a : b.
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

impl Simd for Avx512F64 {
    type T = f64;
    type V = __m512d;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m512d {
        _mm512_setzero_pd()
    }
    #[inline(always)]
    unsafe fn splat(x: f64) -> __m512d {
        _mm512_set1_pd(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> __m512d {
        _mm512_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: __m512d) {
        _mm512_storeu_pd(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
        _mm512_fmadd_pd(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512d, b: __m512d) -> __m512d {
        _mm512_mul_pd(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
        _mm512_add_pd(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512d, b: __m512d) -> __m512d {
        _mm512_max_pd(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f64) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

impl Simd for Avx2F32 {
    type T = f32;
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn keep_where_positive(mask: __m256, x: __m256) -> __m256 {
        // All ones where mask > 0 (an ordered compare: false for NaN), then AND.
        _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(mask, _mm256_setzero_ps()), x)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

impl Simd for Avx2F64 {
    type T = f64;
    type V = __m256d;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> __m256d {
        _mm256_setzero_pd()
    }
    #[inline(always)]
    unsafe fn splat(x: f64) -> __m256d {
        _mm256_set1_pd(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> __m256d {
        _mm256_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: __m256d) {
        _mm256_storeu_pd(p, v)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
        _mm256_fmadd_pd(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256d, b: __m256d) -> __m256d {
        _mm256_mul_pd(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
        _mm256_add_pd(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256d, b: __m256d) -> __m256d {
        _mm256_max_pd(a, b)
    }
    #[inline(always)]
    unsafe fn keep_where_positive(mask: __m256d, x: __m256d) -> __m256d {
        // All ones where mask > 0 (an ordered compare: false for NaN), then AND.
        _mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(mask, _mm256_setzero_pd()), x)
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: f64, b: f64, c: f64) -> f64 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f64) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_f32(kc: usize, a: *const f32, b: *const f32, st: &TileStore<f32>) {
    microkernel::<Avx512F32, 8, 3>(kc, a, b, st)
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_f64(kc: usize, a: *const f64, b: *const f64, st: &TileStore<f64>) {
    microkernel::<Avx512F64, 8, 3>(kc, a, b, st)
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_f32_narrow(kc: usize, a: *const f32, b: *const f32, st: &TileStore<f32>) {
    microkernel::<Avx512F32, 8, 2>(kc, a, b, st)
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn avx512_f64_narrow(kc: usize, a: *const f64, b: *const f64, st: &TileStore<f64>) {
    microkernel::<Avx512F64, 8, 2>(kc, a, b, st)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f32(kc: usize, a: *const f32, b: *const f32, st: &TileStore<f32>) {
    microkernel::<Avx2F32, 6, 2>(kc, a, b, st)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f64(kc: usize, a: *const f64, b: *const f64, st: &TileStore<f64>) {
    microkernel::<Avx2F64, 6, 2>(kc, a, b, st)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f32_in_place(kc: usize, src: &InPlaceOperands<f32>, st: &TileStore<f32>) {
    microkernel_in_place::<Avx2F32, 6, 2>(kc, src, st)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_f64_in_place(kc: usize, src: &InPlaceOperands<f64>, st: &TileStore<f64>) {
    microkernel_in_place::<Avx2F64, 6, 2>(kc, src, st)
}

// (The AVX-512 kernels have no in-place twin yet: it could not be measured on an AVX-512
// machine, so small products there keep packing.)
pub(crate) const AVX512_F32: MicroKernel<f32> = MicroKernel { isa: Isa::Avx512, mr: 8, nr: 48, run: avx512_f32, run_in_place: None };
pub(crate) const AVX512_F64: MicroKernel<f64> = MicroKernel { isa: Isa::Avx512, mr: 8, nr: 24, run: avx512_f64, run_in_place: None };
pub(crate) const AVX2_F32: MicroKernel<f32> =
    MicroKernel { isa: Isa::Avx2, mr: 6, nr: 16, run: avx2_f32, run_in_place: Some(avx2_f32_in_place) };
pub(crate) const AVX2_F64: MicroKernel<f64> =
    MicroKernel { isa: Isa::Avx2, mr: 6, nr: 8, run: avx2_f64, run_in_place: Some(avx2_f64_in_place) };
/// The narrow AVX-512 blocks (8 × 32 f32, 8 × 16 f64: 16 accumulators, 2 for B), for a C
/// whose width the wide blocks would pad a lot (see `HasKernels::microkernel_for`).
pub(crate) const AVX512_F32_NARROW: MicroKernel<f32> =
    MicroKernel { isa: Isa::Avx512, mr: 8, nr: 32, run: avx512_f32_narrow, run_in_place: None };
pub(crate) const AVX512_F64_NARROW: MicroKernel<f64> =
    MicroKernel { isa: Isa::Avx512, mr: 8, nr: 16, run: avx512_f64_narrow, run_in_place: None };
