//! Float32 products on the CPU's matrix engine (AMX), for precisions "high" and "medium"
//! (precision.rs): operands converted to bfloat16 as they are packed into tile layout, tile
//! products accumulated in float32, the epilogue applied as each block of C is stored.
//!
//! ```text
//!   C block 32 × 32 = four 16 × 16 float32 tiles (tmm0–3)
//!   per step of 32 along k:  A: two 16 × 32 bfloat16 tiles (tmm4, tmm5)
//!                            B: two 16 × 16 pairs of bfloat16 (tmm6, tmm7), k in pairs (VNNI)
//!   four TDPBF16PS: C[i][j] += A[i] · B[j]        ("high": twelve, over hi/lo terms)
//! ```
//!
//! Blocks of k (KC) are packed whole, A's by all threads together and B's likewise, then the
//! threads share the 32 × 32 blocks of C; each thread loads the tile configuration before its
//! first tile product and releases the tiles after its last.

mod kernel;
mod pack;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use super::kernel::TileStore;
use super::precision::{Precision, Rounding};
use super::problem::{Problem, SendPtr};
use crate::buffers::with_scratch;
use crate::threads::Team;

/// Rows and columns of the block of C one kernel call computes.
pub(super) const BLOCK: usize = 32;
/// k elements per tile step (a 64-byte tile row of bfloat16).
pub(super) const STEP: usize = 32;
/// k per packed block: a whole product up to 2048 along k is summed in the tiles, C stored
/// once (smaller blocks stored and re-read C per block: 1024–2048² at 430–470 GFLOP/s
/// against 550–600 with one block; docs/measurements.md, "AMX").
const KC: usize = 2048;
/// Columns of B per chunk the threads work through: KC × NC bfloat16 (512 KiB) stays in L2
/// while every row panel of A passes over it.
const NC: usize = 128;

/// Whether this CPU and OS let the process use AMX's bfloat16 tiles: CPUID's AMX-TILE and
/// AMX-BF16 bits, the OS saving tile state (XCR0 bits 17 and 18), and Linux's permission for
/// the tile data, asked once (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
pub fn supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(kernel::request_tiles)
}

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the AMX path off (or on again), so that "high" and "medium" run on the FMA kernels
/// with the operands rounded while packing: for tests and benchmarks of both on one machine.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether float32 products of reduced precision run on AMX here and now.
pub fn in_use() -> bool {
    ENABLED.load(Ordering::Relaxed) && supported()
}

/// `p` (float32, precision high or medium) on the tiles.
///
/// SAFETY: as for [`Problem::run`]; `in_use()`; T is f32 (the caller dispatches on KIND), and
/// the CPU has AVX-512 (every AMX CPU does; the stores use it).
pub(super) unsafe fn run(p: &Problem<f32>, team: &Team) {
    let (m, n, k) = (p.m, p.n, p.k);
    super::sums::add_up(p);
    let terms: &[Rounding] = match p.precision {
        Precision::High => &[Rounding::Bf16, Rounding::Bf16Rest],
        _ => &[Rounding::Bf16],
    };
    let (mp, np) = (m.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let kc = KC.min(k.next_multiple_of(STEP));
    // Packed bfloat16 pairs, counted in 32-bit words: a panel step is 32 × 32 values.
    let step_words = BLOCK * STEP / 2;
    let steps_max = kc / STEP;
    let (a_words, b_words) = (mp * steps_max * step_words, np * steps_max * step_words);
    let parts = terms.len();
    with_scratch::<f32, _>(parts * (a_words + b_words), |scratch| {
        let base = SendPtr(scratch.as_mut_ptr().cast::<u32>());
        for pc in (0..k).step_by(kc) {
            let kb = kc.min(k - pc);
            let steps = kb.div_ceil(STEP);
            for (t, &round) in terms.iter().enumerate() {
                let (a_dst, b_dst) = (SendPtr(base.get().add(t * a_words)), SendPtr(base.get().add(parts * a_words + t * b_words)));
                // SAFETY: each task packs its own panels.
                let kblock = pack::KBlock { pc, kb, steps, round };
                team.run_ranges(mp, 1, |panels| pack::pack_a(p.a, m, kblock, a_dst.get(), panels));
                team.run_ranges(np, 1, |panels| pack::pack_b(p.b, n, kblock, b_dst.get(), panels));
            }
            let (first, last) = (pc == 0, pc + kb == k);
            let high = parts == 2;
            // Panel q of a region: the hi terms, then (for "high") the lo terms a region later.
            let panel = |region: usize, q: usize| base.get().add(region + q * steps * step_words);
            // SAFETY: each task stores its own blocks of C; the packed panels are only read.
            // Blocks in chunks of NC columns, all row panels of A over one chunk before the next.
            let chunk = NC / BLOCK;
            let block = |b: usize| {
                let (c, rest) = (b / (mp * chunk), b % (mp * chunk));
                let width = chunk.min(np - c * chunk);
                (rest / width, c * chunk + rest % width)
            };
            team.run_ranges(mp * np, 1, |blocks| {
                kernel::with_tiles(|| {
                    for b in blocks {
                        let (qi, qj) = block(b);
                        let a_hi = panel(0, qi);
                        let b_hi = panel(parts * a_words, qj);
                        let acc = if high {
                            let a_lo = a_hi.add(a_words);
                            let b_lo = b_hi.add(b_words);
                            kernel::block_high(steps, a_hi, a_lo, b_hi, b_lo)
                        } else {
                            kernel::block_medium(steps, a_hi, b_hi)
                        };
                        let (i0, j0) = (qi * BLOCK, qj * BLOCK);
                        store_block(p, &acc, i0, j0, first, last);
                    }
                })
            });
        }
    });
}

/// The four 16 × 16 tiles of a finished 32 × 32 block (row-major, 32 wide) through the
/// epilogue into C, clipped to C's edges.
unsafe fn store_block(p: &Problem<f32>, acc: &[f32; BLOCK * BLOCK], i0: usize, j0: usize, first: bool, last: bool) {
    for (ti, tj) in [(0, 0), (0, 16), (16, 0), (16, 16)] {
        let (i, j) = (i0 + ti, j0 + tj);
        if i >= p.m || j >= p.n {
            continue;
        }
        let st: TileStore<f32> = p.store(i, j, 16.min(p.m - i), 16.min(p.n - j), first, last);
        kernel::store_tile(acc.as_ptr().add(ti * BLOCK + tj), BLOCK, &st);
    }
}
