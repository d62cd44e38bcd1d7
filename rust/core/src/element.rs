//! The scalar types the kernels compute in.

use core::fmt::Debug;
use core::ops::{Add, Mul, Sub};

/// A floating-point element the GEMM can compute with: `f32` or `f64`.
///
/// Sealed: the SIMD kernels exist only for these two.
pub trait Element:
    Copy + Debug + Default + PartialOrd + Send + Sync + 'static + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + sealed::Sealed
{
    const ZERO: Self;
    const ONE: Self;
    /// Machine epsilon, for error bounds in tests.
    const EPSILON: Self;
    /// Which element this is, for dispatching to the kernel of its width.
    const KIND: ElementKind;

    /// `self * a + b` with one rounding (an FMA), as the vector kernels compute it.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;

    /// `self > 0`, false for NaN: whether a ReLU-gradient mask lets a value through.
    #[inline(always)]
    fn is_positive(self) -> bool {
        self > Self::ZERO
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElementKind {
    F32,
    F64,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const EPSILON: Self = f32::EPSILON;
    const KIND: ElementKind = ElementKind::F32;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const EPSILON: Self = f64::EPSILON;
    const KIND: ElementKind = ElementKind::F64;
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
}
