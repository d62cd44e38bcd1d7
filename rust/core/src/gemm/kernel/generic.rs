//! The portable kernel: plain scalar arithmetic, for CPUs with none of the SIMD paths.
//!
//! A 4 × 4 block of scalar "vectors" (LANES = 1); the compiler keeps the 16 accumulators in
//! registers. Not fused (`a * b + c` rounds twice), since a libm `fma` call would be far slower
//! than the unfused form on CPUs without an FMA instruction.

use core::marker::PhantomData;

use super::{microkernel, microkernel_in_place, InPlaceOperands, MicroKernel, Simd, TileStore};
use crate::element::Element;
use crate::gemm::Isa;

#[derive(Clone, Copy)]
pub(crate) struct Scalar<T>(PhantomData<T>);

impl<T: Element> Simd for Scalar<T> {
    type T = T;
    type V = T;
    const LANES: usize = 1;
    const REGISTERS: usize = 16;
    type Mask = bool;
    #[inline(always)]
    unsafe fn first_lanes(count: usize) -> bool {
        count > 0
    }
    #[inline(always)]
    unsafe fn load_masked(p: *const T, m: bool) -> T {
        if m {
            *p
        } else {
            T::ZERO
        }
    }
    #[inline(always)]
    unsafe fn store_masked(p: *mut T, v: T, m: bool) {
        if m {
            *p = v
        }
    }
    #[inline(always)]
    unsafe fn zero() -> T {
        T::ZERO
    }
    #[inline(always)]
    unsafe fn splat(x: T) -> T {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const T) -> T {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut T, v: T) {
        *p = v
    }
    #[inline(always)]
    unsafe fn fmadd(a: T, b: T, c: T) -> T {
        a * b + c
    }
    #[inline(always)]
    unsafe fn mul(a: T, b: T) -> T {
        a * b
    }
    #[inline(always)]
    unsafe fn add(a: T, b: T) -> T {
        a + b
    }
    #[inline(always)]
    unsafe fn max(a: T, b: T) -> T {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn fmadd_scalar(a: T, b: T, c: T) -> T {
        a * b + c
    }
}

unsafe fn generic<T: Element>(kc: usize, a: *const T, b: *const T, st: &TileStore<T>) {
    microkernel::<Scalar<T>, 4, 4>(kc, a, b, st)
}

unsafe fn generic_in_place<T: Element>(kc: usize, src: &InPlaceOperands<T>, st: &TileStore<T>) {
    microkernel_in_place::<Scalar<T>, 4, 4>(kc, src, st)
}

pub(crate) const fn kernel<T: Element>() -> MicroKernel<T> {
    MicroKernel { isa: Isa::Generic, mr: 4, nr: 4, run: generic::<T>, run_in_place: generic_in_place::<T> }
}
