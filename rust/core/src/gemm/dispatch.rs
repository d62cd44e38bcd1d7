//! Choosing the micro-kernel once, at run time, from the CPU's features.

use core::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
use super::kernel::x86;
use super::kernel::{generic, MicroKernel, SimdElement};

/// An instruction-set path with its own micro-kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Avx512,
    Avx2,
    Neon,
    Generic,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Generic];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Generic => "generic",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // AVX2 too: the packing routines of both x86 paths are written with it.
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => true,
            Isa::Generic => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every path this CPU supports, fastest first.
    pub fn supported() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported()).collect()
    }

    /// The fastest path this CPU supports.
    pub fn best() -> Isa {
        Isa::supported()[0]
    }

    /// The path in use: [`Isa::best`] unless [`Isa::force`] chose another.
    pub fn active() -> Isa {
        match ACTIVE.load(Ordering::Relaxed) {
            UNSET => {
                let best = Isa::best();
                ACTIVE.store(best as u8, Ordering::Relaxed);
                best
            }
            v => Isa::ALL[v as usize],
        }
    }

    /// Makes every later GEMM use this path (for tests and benchmarks of each path).
    pub fn force(self) -> Result<(), String> {
        if !self.is_supported() {
            let names: Vec<_> = Isa::supported().iter().map(|isa| isa.name()).collect();
            return Err(format!("kernel {:?} is not supported by this CPU (supported: {})", self.name(), names.join(", ")));
        }
        ACTIVE.store(self as u8, Ordering::Relaxed);
        Ok(())
    }
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// Elements with micro-kernels per ISA. Implemented for `f32` and `f64` only.
pub trait HasKernels: SimdElement {
    /// The register blocks of `isa`, widest first, all with the same MR (hence the same KC
    /// and the same bits for a product, whichever computes it); the caller has checked
    /// `isa.is_supported()`.
    fn microkernels(isa: Isa) -> &'static [MicroKernel<Self>];

    /// The widest register block of `isa`.
    fn microkernel(isa: Isa) -> MicroKernel<Self> {
        Self::microkernels(isa)[0]
    }

    /// The kernel for a C of `n` columns: the widest one that computes at most
    /// `NARROW_MARGIN` times as many (padded) columns as the least padded, e.g. n = 64 is 96
    /// columns with NR = 48 but 64 with NR = 32 or 16, so NR = 32. Depends on `n` only, never
    /// on the thread count.
    fn microkernel_for(isa: Isa, n: usize) -> MicroKernel<Self> {
        let kernels = Self::microkernels(isa);
        let least = kernels.iter().map(|k| n.next_multiple_of(k.nr())).min().unwrap_or(n);
        *kernels.iter().find(|k| n.next_multiple_of(k.nr()) as f64 <= NARROW_MARGIN * least as f64).unwrap_or(&kernels[0])
    }
}

/// How much more padded work a wider kernel may do before a narrower one is used.
pub const NARROW_MARGIN: f64 = 1.08;

impl HasKernels for f32 {
    fn microkernels(isa: Isa) -> &'static [MicroKernel<f32>] {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &[x86::AVX512_F32, x86::AVX512_F32_NARROW, x86::AVX512_F32_THIN],
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &[x86::AVX2_F32, x86::AVX2_F32_THIN],
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => &[super::kernel::neon::NEON_F32],
            _ => &GENERIC_F32,
        }
    }
}

impl HasKernels for f64 {
    fn microkernels(isa: Isa) -> &'static [MicroKernel<f64>] {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => &[x86::AVX512_F64, x86::AVX512_F64_NARROW, x86::AVX512_F64_THIN],
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => &[x86::AVX2_F64, x86::AVX2_F64_THIN],
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => &[super::kernel::neon::NEON_F64],
            _ => &GENERIC_F64,
        }
    }
}

static GENERIC_F32: [MicroKernel<f32>; 1] = [generic::kernel::<f32>()];
static GENERIC_F64: [MicroKernel<f64>; 1] = [generic::kernel::<f64>()];
