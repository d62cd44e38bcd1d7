//! Reduced-precision products of float32 operands, in the vocabulary of torch's
//! `set_float32_matmul_precision`:
//!
//! - [`Precision::Highest`]: float32 multiply-adds (the default, what every other path does);
//! - [`Precision::High`]: each operand split into two bfloat16 terms, x = hi + lo with
//!   hi = bf16(x) and lo = bf16(x − hi), and three products hi·hi + hi·lo + lo·hi summed in
//!   float32: about 16 bits of each operand's mantissa;
//! - [`Precision::Medium`]: operands rounded to bfloat16, one product, float32 sums.
//!
//! On a CPU with AMX the products run on its tiles (amx/); elsewhere on the FMA kernels with
//! the operands rounded, or split, as they are packed: a bfloat16 times a bfloat16 is exact in
//! float32, so both give results within the same bounds. Rounding is to nearest, ties to even.

use crate::element::{Element, ElementKind};

/// How float32 operands are multiplied. float64 products are always float64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    Highest,
    High,
    Medium,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Highest => "highest",
            Precision::High => "high",
            Precision::Medium => "medium",
        }
    }

    pub fn from_name(name: &str) -> Option<Precision> {
        [Precision::Highest, Precision::High, Precision::Medium].into_iter().find(|p| p.name() == name)
    }

    /// The products summed, as the rounding applied to A's and to B's elements.
    pub(crate) fn terms(self) -> &'static [(Rounding, Rounding)] {
        match self {
            Precision::Highest => &[(Rounding::None, Rounding::None)],
            Precision::Medium => &[(Rounding::Bf16, Rounding::Bf16)],
            Precision::High => {
                &[(Rounding::Bf16, Rounding::Bf16), (Rounding::Bf16, Rounding::Bf16Rest), (Rounding::Bf16Rest, Rounding::Bf16)]
            }
        }
    }
}

/// What packing does to an operand's element for one term of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rounding {
    /// The element itself.
    None,
    /// hi = bf16(x).
    Bf16,
    /// lo = bf16(x − bf16(x)), what hi leaves.
    Bf16Rest,
}

/// `x` rounded to bfloat16 (to nearest, ties to even; NaN stays NaN), as bfloat16's 16 bits.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16; // quiet, sign kept
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// The float32 value of bfloat16 bits.
#[inline(always)]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `x` rounded to bfloat16, as a float32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    bf16_value(bf16_bits(x))
}

impl Rounding {
    #[inline(always)]
    pub(crate) fn apply(self, x: f32) -> f32 {
        match self {
            Rounding::None => x,
            Rounding::Bf16 => round_bf16(x),
            Rounding::Bf16Rest => round_bf16(x - round_bf16(x)),
        }
    }

    /// Rounds every element of `buf` in place (float32 only; float64 passes unchanged).
    ///
    /// SAFETY: `buf` points at `len` writable elements.
    pub(crate) unsafe fn apply_all<T: Element>(self, buf: *mut T, len: usize) {
        if self == Rounding::None || T::KIND != ElementKind::F32 {
            return;
        }
        // The cast only renames T, which KIND says is f32.
        let buf = core::slice::from_raw_parts_mut(buf.cast::<f32>(), len);
        for x in buf {
            *x = self.apply(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8)), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6 (even).
        assert_eq!(round_bf16(1.0 + 3.0 * 2f32.powi(-8)), 1.0 + 2f32.powi(-6));
        // just past halfway rounds up; just before, down
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 1.0 + 2f32.powi(-7));
        assert_eq!(round_bf16(1.0 + 2f32.powi(-8) - 2f32.powi(-20)), 1.0);
        assert_eq!(round_bf16(-1.5), -1.5);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY); // rounds past the largest bfloat16
        assert_eq!(bf16_bits(-0.0), 0x8000);
        // hi + lo keeps about 16 bits
        let x = 1.2345678f32;
        let (hi, lo) = (Rounding::Bf16.apply(x), Rounding::Bf16Rest.apply(x));
        assert!(((hi + lo) - x).abs() <= x.abs() * 2f32.powi(-16));
        assert_eq!(Precision::from_name("high"), Some(Precision::High));
        assert_eq!(Precision::from_name("bf16"), None);
    }
}
