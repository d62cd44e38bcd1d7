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

/// A cache line, on every CPU matgrad runs on.
pub(crate) const LINE_BYTES: usize = 64;

/// Elements from `p` to the next cache line boundary (0 if `p` is on one, or if no element
/// boundary meets one). NumPy's arrays start 16 bytes past a line, so a vector loaded at
/// their start spans two lines (and a row of 4 KiB touches 65 lines and two pages).
pub(crate) fn elements_to_line<T>(p: *const T) -> usize {
    let size = core::mem::size_of::<T>();
    let addr = p as usize;
    if !addr.is_multiple_of(size) {
        return 0;
    }
    (LINE_BYTES - addr % LINE_BYTES) % LINE_BYTES / size
}

/// A block of up to `block` vector lanes of a row starting at `p`, `left` of them remaining,
/// that ends on a cache line where `p` is `lead` (< `lanes`) elements short of one: its first
/// vector takes those `lead`, the rest are whole vectors on lines. Returns `(lead, count)`; a
/// buffer for the block puts its element 0 `(lanes - lead) % lanes` past a line, so that its
/// whole vectors sit on lines too (few_rows.rs, vector.rs).
pub(crate) fn block_to_line<T>(p: *const T, lanes: usize, block: usize, left: usize) -> (usize, usize) {
    let lead = elements_to_line(p) % lanes;
    let count = if lead > 0 { block - lanes + lead } else { block };
    (lead, count.min(left))
}

/// Its contents on a cache-line boundary (`LINE_BYTES`).
#[repr(align(64))]
pub(crate) struct LineAligned<A>(pub A);

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

/// The step that cuts `len` into as few blocks as can be had of at most 1/8 over `max`, all
/// of about equal size (a multiple of `multiple`): k = 2048 at KC = 680 is 3 × 688, not
/// 3 × 680 and a sliver of 8 that costs a whole extra pass over C. A `len` that fits one
/// block gives `max` itself.
pub(crate) fn even_block(len: usize, max: usize, multiple: usize) -> usize {
    debug_assert!(max >= multiple && max.is_multiple_of(multiple));
    if len <= max {
        return max;
    }
    let blocks = len.div_ceil(max + max / 8);
    len.div_ceil(blocks).next_multiple_of(multiple)
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
    fn even_blocks_leave_no_sliver() {
        // k = 2048 at KC = 680: three blocks of 688, not three of 680 and one of 8.
        assert_eq!(even_block(2048, 680, 8), 688);
        assert_eq!(even_block(1024, 680, 8), 512);
        assert_eq!(even_block(500, 680, 8), 680);
        assert_eq!(even_block(1000, 96, 16), 112);
        for len in 1..3000 {
            for (max, multiple) in [(680, 8), (96, 16), (3084, 6), (8, 8)] {
                let step = even_block(len, max, multiple);
                let blocks = len.div_ceil(step);
                let over = (max + max / 8).next_multiple_of(multiple);
                assert!(step <= over && blocks <= len.div_ceil(max), "len {len} max {max}: step {step}");
                // The last block is no more than one `multiple` per block short of the others.
                let last = len - (blocks - 1) * step;
                assert!(last + blocks * multiple >= step.min(len), "len {len} max {max}: last {last}");
            }
        }
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
