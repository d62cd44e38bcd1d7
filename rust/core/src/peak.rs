//! The FMA peak: what this CPU's widest kernel path can multiply-add with everything in
//! registers, measured, so that a product's speed can be read as a share of it (the host's
//! clock moves from minute to minute, so it is measured beside the product, not assumed).

use std::time::{Duration, Instant};

use crate::element::ElementKind;
use crate::gemm::Isa;
use crate::threads::Team;

/// Independent accumulator chains per thread: enough to cover the FMA latency (4–5 cycles) on
/// two ports. The AVX2 loops take 12, leaving the two operands in registers among AVX2's 16: at
/// 16 chains two accumulators were spilled to the stack every round and the loop ran at half
/// the rate (Zen 3: 49 of 93 GFLOP/s f32 per core, below what its GEMM reaches).
const CHAINS: usize = 16;
const AVX2_CHAINS: usize = 12;

/// GFLOP/s of `threads` threads each running a register-only FMA loop on the widest kernel
/// path of this CPU for about `duration`, in float32 or float64.
pub fn fma_peak(kind: ElementKind, threads: usize, duration: Duration) -> f64 {
    let threads = threads.max(1);
    let team = Team::new(threads).unwrap_or(Team::SERIAL);
    let rates: Vec<std::sync::Mutex<f64>> = (0..threads).map(|_| std::sync::Mutex::new(0.0)).collect();
    team.run(threads, |t| {
        let rate = one_thread(kind, duration);
        *rates[t].lock().unwrap_or_else(|e| e.into_inner()) = rate;
    });
    rates.iter().map(|r| *r.lock().unwrap_or_else(|e| e.into_inner())).sum()
}

/// One thread's GFLOP/s over about `duration`.
fn one_thread(kind: ElementKind, duration: Duration) -> f64 {
    let isa = Isa::best();
    let start = Instant::now();
    let mut flops = 0.0f64;
    while start.elapsed() < duration {
        flops += run_chains(isa, kind, 1 << 16);
    }
    flops / start.elapsed().as_secs_f64() / 1e9
}

/// `iters` rounds of CHAINS FMAs on vectors of the ISA; the flops done.
fn run_chains(isa: Isa, kind: ElementKind, iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each branch runs only where `Isa::best()` found its features.
        unsafe {
            match (isa, kind) {
                (Isa::Avx512, ElementKind::F32) => return x86::avx512_f32(iters),
                (Isa::Avx512, ElementKind::F64) => return x86::avx512_f64(iters),
                (Isa::Avx2, ElementKind::F32) => return x86::avx2_f32(iters),
                (Isa::Avx2, ElementKind::F64) => return x86::avx2_f64(iters),
                _ => {}
            }
        }
    }
    let _ = isa;
    scalar(kind, iters)
}

/// The portable loop (NEON and the generic path are measured as plain multiply-adds).
fn scalar(kind: ElementKind, iters: usize) -> f64 {
    let mut acc = [1.0f64; CHAINS];
    let (x, y) = (core::hint::black_box(0.999_999f64), core::hint::black_box(1e-7f64));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(x, y);
        }
    }
    core::hint::black_box(acc);
    let _ = kind;
    (iters * CHAINS * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    use super::{AVX2_CHAINS, CHAINS};

    /// The loop for one vector type: `$chains` accumulators, one FMA each per round.
    macro_rules! chains {
        ($name:ident, $feature:literal, $v:ty, $set1:ident, $fma:ident, $t:ty, $lanes:expr, $chains:expr) => {
            #[target_feature(enable = $feature)]
            pub(super) unsafe fn $name(iters: usize) -> f64 {
                let mut acc: [$v; $chains] = [$set1(1.0); $chains];
                let (x, y) = ($set1(core::hint::black_box(0.999_999 as $t)), $set1(core::hint::black_box(1e-7 as $t)));
                for _ in 0..iters {
                    for a in acc.iter_mut() {
                        *a = $fma(*a, x, y);
                    }
                }
                core::hint::black_box(&acc);
                (iters * $chains * 2 * $lanes) as f64
            }
        };
    }

    chains!(avx512_f32, "avx512f,fma", __m512, _mm512_set1_ps, _mm512_fmadd_ps, f32, 16, CHAINS);
    chains!(avx512_f64, "avx512f,fma", __m512d, _mm512_set1_pd, _mm512_fmadd_pd, f64, 8, CHAINS);
    chains!(avx2_f32, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, f32, 8, AVX2_CHAINS);
    chains!(avx2_f64, "avx2,fma", __m256d, _mm256_set1_pd, _mm256_fmadd_pd, f64, 4, AVX2_CHAINS);
}
