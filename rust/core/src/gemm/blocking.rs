//! Cache blocking: MC, KC, NC from the machine's cache sizes (Low et al., "Analytical modeling
//! is enough for high-performance BLIS", simplified).
//!
//! - KC: the A micro-panel (MR × KC) is reused by every B micro-panel of the B block, so it
//!   stays in L1 beside the B micro-panel streaming through: give it about half of L1.
//! - NC: the packed B block (KC × NC) is re-read for every A micro-panel: half of L2.
//! - MC: the packed A block (MC × KC) is shared by all threads from L3: a quarter of L3,
//!   capped so the buffer stays modest.

use std::sync::OnceLock;

/// Data-cache sizes in bytes, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1: usize,
    pub l1_ways: usize,
    pub l2: usize,
    pub l3: usize,
}

impl CacheSizes {
    /// A typical modern core, for machines where the sizes cannot be read.
    pub const FALLBACK: CacheSizes = CacheSizes { l1: 32 << 10, l1_ways: 8, l2: 1 << 20, l3: 8 << 20 };

    /// The sizes of the first CPU's caches (from sysfs on Linux), else [`CacheSizes::FALLBACK`].
    pub fn get() -> CacheSizes {
        static SIZES: OnceLock<CacheSizes> = OnceLock::new();
        *SIZES.get_or_init(|| read_sysfs().unwrap_or(CacheSizes::FALLBACK))
    }
}

fn read_sysfs() -> Option<CacheSizes> {
    let mut sizes = CacheSizes { l1: 0, l1_ways: 0, l2: 0, l3: 0 };
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).ok();
        let Some(level) = read("level") else { break };
        let kind = read("type").unwrap_or_default();
        if kind.trim() == "Instruction" {
            continue;
        }
        let size = parse_size(&read("size")?)?;
        match level.trim() {
            "1" => {
                sizes.l1 = size;
                sizes.l1_ways = read("ways_of_associativity").and_then(|w| w.trim().parse().ok()).unwrap_or(8);
            }
            "2" => sizes.l2 = size,
            "3" => sizes.l3 = size,
            _ => {}
        }
    }
    let fb = CacheSizes::FALLBACK;
    if sizes.l1 == 0 || sizes.l2 == 0 {
        return None;
    }
    Some(CacheSizes {
        l1_ways: if sizes.l1_ways >= 4 { sizes.l1_ways } else { fb.l1_ways },
        l3: if sizes.l3 == 0 { sizes.l2.max(fb.l3) } else { sizes.l3 },
        ..sizes
    })
}

/// "32K", "1024K", "36M" → bytes.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: usize = digits.parse().ok()?;
    Some(match unit {
        "" => n,
        "K" => n << 10,
        "M" => n << 20,
        "G" => n << 30,
        _ => return None,
    })
}

/// Block sizes for one kernel shape and element size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
}

impl Blocking {
    pub fn new(mr: usize, nr: usize, elem_size: usize, caches: CacheSizes) -> Blocking {
        let kc = round_down((caches.l1 / 2 / (mr * elem_size)).clamp(64, 1024), 8);
        let nc = round_down((caches.l2 / 2 / (kc * elem_size)).clamp(nr, 4096), nr);
        let mc = round_down((caches.l3 / 4 / (kc * elem_size)).clamp(mr, 4096), mr);
        Blocking { mc, kc, nc }
    }
}

fn round_down(x: usize, multiple: usize) -> usize {
    x / multiple * multiple
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_sizes() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("36608K"), Some(36608 << 10));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn blocks_fit_their_caches() {
        let caches = CacheSizes { l1: 32 << 10, l1_ways: 8, l2: 1 << 20, l3: 32 << 20 };
        let b = Blocking::new(12, 32, 4, caches);
        assert!(b.kc * 12 * 4 <= caches.l1);
        assert!(b.nc * b.kc * 4 <= caches.l2);
        assert_eq!(b.mc % 12, 0);
        assert_eq!(b.nc % 32, 0);
    }
}
