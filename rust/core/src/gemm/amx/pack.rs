//! Packing float32 blocks into AMX tile layout, rounding each element to bfloat16 (or taking
//! what the rounding leaves, for precision "high") on the way.
//!
//! ```text
//!   A panel (32 rows), per step s of 32 along k:   32 rows × 16 words, a word = the bfloat16
//!                                                  pair (k = 2w, 2w + 1) of its row
//!   B panel (32 columns), per step s:              two tiles of 16 columns; tile row w holds,
//!                                                  for each column, the pair (k = 2w, 2w + 1)
//! ```
//!
//! Past A's rows, B's columns or the block's k the packed values are zero. Rows of A along k
//! and rows of B along its columns (the common layouts) are converted 16 lanes at a time.

use core::arch::x86_64::*;

use super::{BLOCK, STEP};
use crate::gemm::pack::Block;
use crate::gemm::precision::{bf16_bits, Rounding};

/// 32-bit words per packed step of a panel.
const STEP_WORDS: usize = BLOCK * STEP / 2;

/// One block of k as packing takes it: columns (of A; rows of B) `pc .. pc + kb` in `steps`
/// steps, each element rounded by `round`.
#[derive(Clone, Copy)]
pub(super) struct KBlock {
    pub pc: usize,
    pub kb: usize,
    pub steps: usize,
    pub round: Rounding,
}

/// The bfloat16 bits of element (i, p) of `x` after `round`, or 0 outside `rows` × `cols`.
#[inline(always)]
unsafe fn bits(x: Block<f32>, i: usize, p: usize, rows: usize, cols: usize, round: Rounding) -> u32 {
    if i < rows && p < cols {
        bf16_bits(round.apply(*x.at(i, p))) as u32
    } else {
        0
    }
}

/// `round` applied to 16 lanes, as bfloat16 bits in the low half of each 32-bit lane
/// (to nearest, ties to even, NaN kept quiet), with the scalar path's results.
#[inline(always)]
unsafe fn round_lanes(x: __m512, round: Rounding) -> __m512i {
    #[inline(always)]
    unsafe fn nearest(x: __m512) -> __m512i {
        let bits = _mm512_castps_si512(x);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)));
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
        _mm512_mask_mov_epi32(rounded, nan, quiet)
    }
    match round {
        Rounding::Bf16Rest => {
            let hi = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(nearest(x)));
            nearest(_mm512_sub_ps(x, hi))
        }
        _ => nearest(x),
    }
}

/// The mask of the first `count` of 16 lanes.
#[inline(always)]
fn first(count: usize) -> __mmask16 {
    ((1u32 << count.min(16)) - 1) as __mmask16
}

/// Packs panels `panels` of A's `m` rows for the block of k `kblock`.
///
/// SAFETY: `a` addresses `m` rows and `pc + kb` columns; `dst` holds the panels' steps.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack_a(a: Block<f32>, m: usize, kblock: KBlock, dst: *mut u32, panels: core::ops::Range<usize>) {
    let KBlock { pc, kb, steps, round } = kblock;
    let a = Block { ptr: a.at(0, pc), ..a };
    for q in panels {
        for s in 0..steps {
            let out = dst.add((q * steps + s) * STEP_WORDS);
            let k0 = s * STEP;
            for row in 0..BLOCK {
                let i = q * BLOCK + row;
                let words = out.add(row * (STEP / 2));
                if a.cs == 1 && i < m {
                    // 32 values along k: two vectors, narrowed to 16-bit and laid side by side.
                    let p = a.at(i, k0);
                    let lo = _mm512_maskz_loadu_ps(first(kb.saturating_sub(k0)), p);
                    let hi = _mm512_maskz_loadu_ps(first(kb.saturating_sub(k0 + 16)), p.add(16));
                    let (lo, hi) = (_mm512_cvtepi32_epi16(round_lanes(lo, round)), _mm512_cvtepi32_epi16(round_lanes(hi, round)));
                    _mm256_storeu_si256(words.cast(), lo);
                    _mm256_storeu_si256(words.add(8).cast(), hi);
                } else {
                    for w in 0..STEP / 2 {
                        let (p0, p1) = (k0 + 2 * w, k0 + 2 * w + 1);
                        *words.add(w) = bits(a, i, p0, m, kb, round) | bits(a, i, p1, m, kb, round) << 16;
                    }
                }
            }
        }
    }
}

/// Packs panels `panels` of B's `n` columns for the block of k `kblock`.
///
/// SAFETY: `b` addresses `pc + kb` rows and `n` columns; `dst` holds the panels' steps.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack_b(b: Block<f32>, n: usize, kblock: KBlock, dst: *mut u32, panels: core::ops::Range<usize>) {
    let KBlock { pc, kb, steps, round } = kblock;
    let b = Block { ptr: b.at(pc, 0), ..b };
    // B seen with k as its columns, for `bits`.
    let bt = Block { ptr: b.ptr, rs: b.cs, cs: b.rs };
    for q in panels {
        for s in 0..steps {
            let out = dst.add((q * steps + s) * STEP_WORDS);
            for t in 0..2 {
                let j0 = q * BLOCK + t * 16;
                for w in 0..STEP / 2 {
                    let (p0, p1) = (s * STEP + 2 * w, s * STEP + 2 * w + 1);
                    let words = out.add(t * (STEP_WORDS / 2) + w * 16);
                    if b.cs == 1 && j0 < n {
                        // Two rows of 16 columns: each column's pair in one word.
                        let mask = first(n - j0);
                        let even = if p0 < kb { _mm512_maskz_loadu_ps(mask, b.at(p0, j0)) } else { _mm512_setzero_ps() };
                        let odd = if p1 < kb { _mm512_maskz_loadu_ps(mask, b.at(p1, j0)) } else { _mm512_setzero_ps() };
                        let pair = _mm512_or_si512(round_lanes(even, round), _mm512_slli_epi32::<16>(round_lanes(odd, round)));
                        _mm512_storeu_si512(words.cast(), pair);
                    } else {
                        for c in 0..16 {
                            let j = j0 + c;
                            *words.add(c) = bits(bt, j, p0, n, kb, round) | bits(bt, j, p1, n, kb, round) << 16;
                        }
                    }
                }
            }
        }
    }
}
