//! The tile instructions, in `asm!` (Rust's AMX intrinsics are nightly-only), and the store of
//! a finished tile through the vector epilogue.

use core::arch::asm;
use core::arch::x86_64::*;

use super::{BLOCK, STEP};
use crate::gemm::kernel::x86::Avx512F32;
use crate::gemm::kernel::{store_tile as store_vectors, TileStore};

/// CPUID's AMX bits and XCR0's tile state, then the OS's permission for the tile data.
pub(super) fn request_tiles() -> bool {
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that can report AMX (checked by the
    // max leaf); XGETBV is only run when CPUID says OSXSAVE.
    unsafe {
        if __cpuid(0).eax < 7 {
            return false;
        }
        let leaf7 = __cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = ((leaf7.edx >> 22) & 1 == 1, (leaf7.edx >> 24) & 1 == 1);
        let osxsave = (__cpuid(1).ecx >> 27) & 1 == 1;
        if !(amx_bf16 && amx_tile && osxsave && std::arch::is_x86_feature_detected!("avx512f")) {
            return false;
        }
        if (_xgetbv(0) >> 17) & 3 != 3 {
            return false;
        }
    }
    arch_prctl_request_tile_data()
}

#[cfg(target_os = "linux")]
fn arch_prctl_request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the arch_prctl system call with a request that only changes this process's
    // permitted XSAVE features; it clobbers rcx and r11 as every syscall does.
    unsafe {
        asm!("syscall", inlateout("rax") SYS_ARCH_PRCTL => ret, in("rdi") ARCH_REQ_XCOMP_PERM, in("rsi") XFEATURE_XTILEDATA,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret == 0
}

#[cfg(not(target_os = "linux"))]
fn arch_prctl_request_tile_data() -> bool {
    false // (other systems are not known to grant it here: the FMA path serves them)
}

/// The tile configuration: palette 1, eight tiles of 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// Runs `f` with this thread's tiles configured, releasing them afterwards.
///
/// SAFETY: the process has the tile permission (`supported()`).
pub(super) unsafe fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    let r = f();
    asm!("tilerelease", options(nostack, nomem));
    r
}

/// Bytes between two packed steps of a panel (32 × 32 bfloat16) and between its two tiles.
const STEP_BYTES: usize = BLOCK * STEP * 2;
const TILE_BYTES: usize = STEP_BYTES / 2;

/// One 32 × 32 block of C = Σ over `steps` of A's panel times B's panel (bfloat16 operands,
/// float32 sums), returned row-major.
///
/// SAFETY: inside [`with_tiles`]; `a` and `b` hold `steps` packed steps each (pack.rs).
pub(super) unsafe fn block_medium(steps: usize, a: *const u32, b: *const u32) -> [f32; BLOCK * BLOCK] {
    let mut c = [0f32; BLOCK * BLOCK];
    asm!(
        "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
        "2:",
        // Each product starts as soon as its tiles are in, the next loads behind it.
        "tileloadd tmm4, [{a} + {row}*1]",
        "tileloadd tmm6, [{b} + {row}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{b} + {row}*1 + {tile}]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{a} + {row}*1 + {tile}]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {a}, {step}",
        "add {b}, {step}",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {ld}*1], tmm0",
        "tilestored [{c} + {ld}*1 + 64], tmm1",
        "tilestored [{c2} + {ld}*1], tmm2",
        "tilestored [{c2} + {ld}*1 + 64], tmm3",
        a = inout(reg) a => _, b = inout(reg) b => _, n = inout(reg) steps => _,
        c = in(reg) c.as_mut_ptr(), c2 = in(reg) c.as_mut_ptr().add(16 * BLOCK),
        row = in(reg) 64usize, ld = in(reg) BLOCK * 4,
        tile = const TILE_BYTES, step = const STEP_BYTES,
        options(nostack)
    );
    c
}

/// [`block_medium`] for precision "high": hi·hi + hi·lo + lo·hi.
///
/// SAFETY: as for [`block_medium`], with the lo terms' panels too.
pub(super) unsafe fn block_high(
    steps: usize,
    a_hi: *const u32,
    a_lo: *const u32,
    b_hi: *const u32,
    b_lo: *const u32,
) -> [f32; BLOCK * BLOCK] {
    let mut c = [0f32; BLOCK * BLOCK];
    asm!(
        "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
        "2:",
        // hi·hi, then hi·lo (B's lo tiles in), then lo·hi (A's lo and B's hi tiles in).
        "tileloadd tmm4, [{ah} + {row}*1]",
        "tileloadd tmm6, [{bh} + {row}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{bh} + {row}*1 + {tile}]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{ah} + {row}*1 + {tile}]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "tileloadd tmm6, [{bl} + {row}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tileloadd tmm7, [{bl} + {row}*1 + {tile}]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "tileloadd tmm4, [{al} + {row}*1]",
        "tileloadd tmm6, [{bh} + {row}*1]",
        "tdpbf16ps tmm0, tmm4, tmm6",
        "tileloadd tmm7, [{bh} + {row}*1 + {tile}]",
        "tdpbf16ps tmm1, tmm4, tmm7",
        "tileloadd tmm5, [{al} + {row}*1 + {tile}]",
        "tdpbf16ps tmm2, tmm5, tmm6",
        "tdpbf16ps tmm3, tmm5, tmm7",
        "add {ah}, {step}",
        "add {al}, {step}",
        "add {bh}, {step}",
        "add {bl}, {step}",
        "dec {n}",
        "jnz 2b",
        "tilestored [{c} + {ld}*1], tmm0",
        "tilestored [{c} + {ld}*1 + 64], tmm1",
        "tilestored [{c2} + {ld}*1], tmm2",
        "tilestored [{c2} + {ld}*1 + 64], tmm3",
        ah = inout(reg) a_hi => _, al = inout(reg) a_lo => _, bh = inout(reg) b_hi => _, bl = inout(reg) b_lo => _,
        n = inout(reg) steps => _,
        c = in(reg) c.as_mut_ptr(), c2 = in(reg) c.as_mut_ptr().add(16 * BLOCK),
        row = in(reg) 64usize, ld = in(reg) BLOCK * 4,
        tile = const TILE_BYTES, step = const STEP_BYTES,
        options(nostack)
    );
    c
}

/// A finished 16 × 16 tile (`ld` elements between rows) through the epilogue into C.
///
/// SAFETY: `st` describes a tile of C as the kernels' stores take it; the CPU has AVX-512.
#[target_feature(enable = "avx512f,fma")]
pub(super) unsafe fn store_tile(tile: *const f32, ld: usize, st: &TileStore<f32>) {
    let acc: [[__m512; 1]; 16] = core::array::from_fn(|i| [_mm512_loadu_ps(tile.add(i * ld))]);
    store_vectors::<Avx512F32, 16, 1>(acc, st)
}
