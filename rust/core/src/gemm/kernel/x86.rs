//! x86-64 kernels: AVX-512F and AVX2+FMA, f32 and f64.
//!
//! Register blocks (rows × columns of C, vectors along the columns so row-major C stores are
//! whole vectors):
//! - AVX-512 (32 zmm): f32 8 × 48, f64 8 × 24 — 24 accumulators, 3 for B, 1 broadcast:
//!   11 loads per 24 FMAs (against 12 × 32 / 14 × 16: docs/measurements.md, "Kernels").
//! - AVX-512 narrow: f32 8 × 32, f64 8 × 16 — 16 accumulators, 2 for B, and thin: 8 × 16 and
//!   8 × 8, one vector a row, for a narrow C that the wide blocks would pad (n = 64 is 96
//!   columns at NR = 48): `HasKernels::microkernel_for`. Same MR, so the same KC and
//!   bit-identical results; slower per FLOP, faster overall there.
//! - AVX2 (16 ymm):    f32  6 × 16, f64  6 × 8  — 12 accumulators, 2 for B, 1 broadcast;
//!   thin 6 × 8 and 6 × 4.
//!
//! Every block has a twin that reads A and B in place (small and skinny products).

use core::arch::x86_64::*;

use super::{microkernel, microkernel_in_place, InPlaceOperands, MicroKernel, Simd, SimdWork, TileStore};
use crate::gemm::Isa;

/// AVX2 masks: a 32-bit lane is selected when its sign bit is set, so the mask for the first
/// `count` lanes is the window of this table starting at `8 - count`.
const FIRST_LANES: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The AVX2 mask selecting the first `count` of 8 32-bit lanes (count <= 8).
#[inline(always)]
pub(crate) unsafe fn first_lanes_mask(count: usize) -> __m256i {
    _mm256_loadu_si256(FIRST_LANES.as_ptr().add(8 - count).cast())
}

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
    const REGISTERS: usize = 32;
    type Mask = __mmask16;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> __mmask16 {
        ((1u32 << count) - 1) as __mmask16
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(m, p)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: __m512, m: __mmask16) {
        _mm512_mask_storeu_ps(p, m, v)
    }
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
    const REGISTERS: usize = 32;
    type Mask = __mmask8;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> __mmask8 {
        ((1u32 << count) - 1) as __mmask8
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f64, m: __mmask8) -> __m512d {
        _mm512_maskz_loadu_pd(m, p)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f64, v: __m512d, m: __mmask8) {
        _mm512_mask_storeu_pd(p, m, v)
    }
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
    const REGISTERS: usize = 16;
    type Mask = __m256i;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> __m256i {
        first_lanes_mask(count)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f32, m: __m256i) -> __m256 {
        _mm256_maskload_ps(p, m)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f32, v: __m256, m: __m256i) {
        _mm256_maskstore_ps(p, m, v)
    }
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
    const REGISTERS: usize = 16;
    type Mask = __m256i;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> __m256i {
        // A 64-bit lane is selected by the sign bit of its upper 32-bit half.
        first_lanes_mask(2 * count)
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const f64, m: __m256i) -> __m256d {
        _mm256_maskload_pd(p, m)
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut f64, v: __m256d, m: __m256i) {
        _mm256_maskstore_pd(p, m, v)
    }
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

/// One register block of one ISA: its kernel on packed panels, its twin reading the operands
/// in place, and the [`MicroKernel`] that names them (`NV` vectors of `LANES` per tile row).
macro_rules! register_block {
    ($(#[$doc:meta])* $name:ident: $simd:ty, $t:ty, $isa:expr, $feature:literal, MR = $mr:literal, NV = $nv:literal) => {
        $(#[$doc])*
        pub(crate) const $name: MicroKernel<$t> = {
            #[target_feature(enable = $feature)]
            unsafe fn packed(kc: usize, a: *const $t, b: *const $t, st: &TileStore<$t>) {
                microkernel::<$simd, $mr, $nv>(kc, a, b, st)
            }
            #[target_feature(enable = $feature)]
            unsafe fn in_place(kc: usize, src: &InPlaceOperands<$t>, st: &TileStore<$t>) {
                microkernel_in_place::<$simd, $mr, $nv>(kc, src, st)
            }
            MicroKernel { isa: $isa, mr: $mr, nr: $nv * <$simd as Simd>::LANES, run: packed, run_in_place: in_place }
        };
    };
}

// Every block of one ISA and dtype has the same MR, hence the same KC (blocking.rs), so they
// give the same bits for the same product: which one a product uses depends on its width only.
register_block!(AVX512_F32: Avx512F32, f32, Isa::Avx512, "avx512f,fma", MR = 8, NV = 3);
register_block!(AVX512_F64: Avx512F64, f64, Isa::Avx512, "avx512f,fma", MR = 8, NV = 3);
register_block!(
    /// 8 × 32: 16 accumulators, 2 for B, for a C the wide block would pad (n = 64 is 96 columns at NR = 48).
    AVX512_F32_NARROW: Avx512F32, f32, Isa::Avx512, "avx512f,fma", MR = 8, NV = 2
);
register_block!(AVX512_F64_NARROW: Avx512F64, f64, Isa::Avx512, "avx512f,fma", MR = 8, NV = 2);
register_block!(
    /// 8 × 16: one vector per row, for C at most 16 columns wide (or its last 16).
    AVX512_F32_THIN: Avx512F32, f32, Isa::Avx512, "avx512f,fma", MR = 8, NV = 1
);
register_block!(AVX512_F64_THIN: Avx512F64, f64, Isa::Avx512, "avx512f,fma", MR = 8, NV = 1);
register_block!(AVX2_F32: Avx2F32, f32, Isa::Avx2, "avx2,fma", MR = 6, NV = 2);
register_block!(AVX2_F64: Avx2F64, f64, Isa::Avx2, "avx2,fma", MR = 6, NV = 2);
register_block!(AVX2_F32_THIN: Avx2F32, f32, Isa::Avx2, "avx2,fma", MR = 6, NV = 1);
register_block!(AVX2_F64_THIN: Avx2F64, f64, Isa::Avx2, "avx2,fma", MR = 6, NV = 1);

/// [`SimdWork`] in each ISA's registers (see `SimdElement::run_on`).
macro_rules! with_simd {
    ($name:ident: $simd:ty, $t:ty, $feature:literal) => {
        /// SAFETY: the CPU has the features.
        #[target_feature(enable = $feature)]
        pub(crate) unsafe fn $name<W: SimdWork<$t>>(work: &W) {
            work.run::<$simd>()
        }
    };
}

with_simd!(with_avx512_f32: Avx512F32, f32, "avx512f,fma");
with_simd!(with_avx512_f64: Avx512F64, f64, "avx512f,fma");
with_simd!(with_avx2_f32: Avx2F32, f32, "avx2,fma");
with_simd!(with_avx2_f64: Avx2F64, f64, "avx2,fma");
