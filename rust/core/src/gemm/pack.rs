//! Packing: copying blocks of A and B, from any element strides, into the contiguous panel
//! layout the micro-kernel reads (see the kernel contract in `kernel/mod.rs`).
//!
//! Strides may be negative or zero (reversed or broadcast NumPy views), so views are never
//! copied before the GEMM: this is the only place that reads A and B.
//!
//! Packing can also sum what it copies: the row sums of A or the column sums of B come out of
//! the same pass (the bias gradient of a linear layer is the column sums of grad_y).
//!
//! A panel of A and a panel of B have the same shape seen the right way round: `width` lanes
//! (A's rows, or B's columns) side by side, one group of lanes per k step. So both go through
//! [`pack_panel`], which has a fast path for each common layout: lanes contiguous in memory
//! (a row-major B, a transposed A) is a vector copy per k step; k contiguous (a row-major A,
//! a transposed B — torch's weight layout) is a transposition in 8 × 8 register tiles.

use super::blocking::LINE_BYTES;
use super::dispatch::Isa;
use crate::element::Element;
#[cfg(target_arch = "x86_64")]
use crate::element::ElementKind;

#[cfg(target_arch = "x86_64")]
mod x86;

/// A strided block of a matrix: element `(i, j)` is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub(crate) struct Block<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a Block is a read-only view; threads only read through it.
unsafe impl<T: Sync> Send for Block<T> {}
unsafe impl<T: Sync> Sync for Block<T> {}

impl<T> Block<T> {
    #[inline(always)]
    pub unsafe fn at(&self, i: usize, j: usize) -> *const T {
        self.ptr.offset(i as isize * self.rs + j as isize * self.cs)
    }
}

impl<T: Copy> Block<T> {
    /// Copies the `rows × cols` block into `dst` as contiguous rows (`dst[i*cols + j]`),
    /// reading along whichever of its strides is shorter (for the paths that copy a small
    /// operand into rows instead of packing it).
    ///
    /// SAFETY: the block addresses `rows × cols` readable elements; `dst` holds as many.
    pub unsafe fn copy_to_rows(&self, rows: usize, cols: usize, dst: &mut [T]) {
        debug_assert!(dst.len() >= rows * cols);
        if self.rs.unsigned_abs() < self.cs.unsigned_abs() {
            for j in 0..cols {
                for i in 0..rows {
                    dst[i * cols + j] = *self.at(i, j);
                }
            }
        } else {
            for i in 0..rows {
                for j in 0..cols {
                    dst[i * cols + j] = *self.at(i, j);
                }
            }
        }
    }
}

/// Packs the `mc × kc` block `a` into `ceil(mc/mr)` panels of `mr × kc`, each stored
/// column by column (`dst[q*mr*kc + p*mr + i] = a[q*mr + i, p]`), zero-padding the last.
/// If `row_sums` is given, `row_sums[i] += a[i, p]` for every packed element, p ascending.
///
/// Only panels `panels.start .. panels.end` are packed, so threads can split the work.
///
/// SAFETY: `a` addresses `mc × kc` readable elements; `dst` holds `ceil(mc/mr)*mr*kc`;
/// `row_sums`, if given, holds `mc` writable elements; `isa` is supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_a<T: Element>(
    isa: Isa,
    mr: usize,
    mc: usize,
    kc: usize,
    a: Block<T>,
    dst: *mut T,
    row_sums: Option<*mut T>,
    panels: core::ops::Range<usize>,
) {
    let block = Panel { ptr: a.ptr, lane_stride: a.rs, k_stride: a.cs, lanes: mc };
    pack_panels(isa, mr, kc, block, dst, row_sums, panels)
}

/// Packs the `kc × nc` block `b` into `ceil(nc/nr)` panels of `kc × nr`, each stored row by
/// row (`dst[q*kc*nr + p*nr + j] = b[p, q*nr + j]`), zero-padding the last.
/// If `col_sums` is given, `col_sums[j] += b[p, j]` for every packed element, p ascending.
///
/// Only panels `panels.start .. panels.end` are packed, so threads can split the work.
///
/// SAFETY: `b` addresses `kc × nc` readable elements; `dst` holds `ceil(nc/nr)*nr*kc`;
/// `col_sums`, if given, holds `nc` writable elements; `isa` is supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_b<T: Element>(
    isa: Isa,
    nr: usize,
    nc: usize,
    kc: usize,
    b: Block<T>,
    dst: *mut T,
    col_sums: Option<*mut T>,
    panels: core::ops::Range<usize>,
) {
    let block = Panel { ptr: b.ptr, lane_stride: b.cs, k_stride: b.rs, lanes: nc };
    pack_panels(isa, nr, kc, block, dst, col_sums, panels)
}

/// K steps packed per sweep across the panels when lanes are contiguous (see [`pack_panels`]).
const SLAB: usize = 8;

/// A hint to bring the line holding `p` into the cache (never faults; any address will do).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is in SSE, which every x86-64 CPU has; it never faults.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Packs panels `panels` of `block` (all its lanes, `width` to a panel) into `dst`, panel `q`
/// at `dst[q*width*kc ..]`, summing lane `l` into `sums[l]`, p ascending, when given.
///
/// When lanes are contiguous (a row-major B), each k step is a row of memory that all the
/// panels share, so they are filled together a slab of k steps at a time: each row is read
/// front to back while it is in L1, rather than one 64-byte piece per panel, a row (often 4
/// KiB) apart (docs/measurements.md, "Packing").
unsafe fn pack_panels<T: Element>(
    isa: Isa,
    width: usize,
    kc: usize,
    block: Panel<T>,
    dst: *mut T,
    sums: Option<*mut T>,
    panels: core::ops::Range<usize>,
) {
    let slab = if block.lane_stride == 1 { SLAB } else { kc.max(1) };
    let lanes = panels.start * width..(panels.end * width).min(block.lanes);
    for p0 in (0..kc).step_by(slab) {
        let steps = slab.min(kc - p0);
        if block.lane_stride == 1 {
            // Ask for the next slab's rows now. Each row's piece is short (NC lanes, often in
            // a page of its own), too short for the hardware prefetchers, which stop at page
            // boundaries: without this every row began with a wait on L3 or memory.
            for p in (p0 + slab..kc).take(slab) {
                let row = block.at(0, p);
                for l in lanes.clone().step_by(LINE_BYTES / core::mem::size_of::<T>()) {
                    prefetch(row.wrapping_add(l));
                }
            }
        }
        for q in panels.clone() {
            let l0 = q * width;
            let src = Panel { ptr: block.at(l0, p0), lanes: width.min(block.lanes - l0), ..block };
            pack_panel(isa, width, steps, src, dst.add(l0 * kc + p0 * width), sums.map(|s| s.add(l0)));
        }
    }
}

/// The source of one panel: lane `l` at k step `p` is `ptr + l*lane_stride + p*k_stride`,
/// for the first `lanes` lanes (the rest of the panel's width is zero padding).
#[derive(Clone, Copy)]
pub(crate) struct Panel<T> {
    pub ptr: *const T,
    pub lane_stride: isize,
    pub k_stride: isize,
    pub lanes: usize,
}

impl<T> Panel<T> {
    #[inline(always)]
    unsafe fn at(&self, lane: usize, p: usize) -> *const T {
        self.ptr.offset(lane as isize * self.lane_stride + p as isize * self.k_stride)
    }

    /// The same panel seen as another element type (for dispatching on `Element::KIND`).
    #[cfg(target_arch = "x86_64")]
    fn cast<U>(self) -> Panel<U> {
        Panel { ptr: self.ptr.cast(), lane_stride: self.lane_stride, k_stride: self.k_stride, lanes: self.lanes }
    }
}

/// `dst[p*width + l] = src(l, p)` for `p < kc`, `l < width` (zero for `l >= src.lanes`), and
/// `sums[l] += src(l, p)`, p ascending, for the real lanes when `sums` is given.
///
/// SAFETY: as for [`pack_a`] / [`pack_b`], for one panel.
unsafe fn pack_panel<T: Element>(isa: Isa, width: usize, kc: usize, src: Panel<T>, dst: *mut T, sums: Option<*mut T>) {
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx512 | Isa::Avx2) {
        // The AVX paths exist for f32 and f64, the only Elements; the casts only rename T.
        let done = match T::KIND {
            ElementKind::F32 => x86::pack_panel_f32(width, kc, src.cast(), dst.cast(), sums.map(<*mut T>::cast)),
            ElementKind::F64 => x86::pack_panel_f64(width, kc, src.cast(), dst.cast(), sums.map(<*mut T>::cast)),
        };
        if done {
            return;
        }
    }
    let _ = isa;
    pack_panel_scalar(width, kc, src, dst, sums)
}

/// The portable [`pack_panel`], for every stride.
unsafe fn pack_panel_scalar<T: Element>(width: usize, kc: usize, src: Panel<T>, dst: *mut T, sums: Option<*mut T>) {
    let lanes = src.lanes;
    if src.k_stride == 1 {
        // Each lane is contiguous along k: copy in slabs of SLAB k steps, so the panel rows
        // being written stay in L1 while each lane is read a cache line at a time.
        const SLAB: usize = 16;
        for p0 in (0..kc).step_by(SLAB) {
            let p1 = (p0 + SLAB).min(kc);
            for l in 0..lanes {
                let lane = core::slice::from_raw_parts(src.at(l, p0), p1 - p0);
                for (p, &x) in (p0..p1).zip(lane) {
                    *dst.add(p * width + l) = x;
                }
                if let Some(sums) = sums {
                    let mut s = *sums.add(l);
                    for &x in lane {
                        s = s + x;
                    }
                    *sums.add(l) = s;
                }
            }
        }
    } else {
        for p in 0..kc {
            for l in 0..lanes {
                let x = *src.at(l, p);
                *dst.add(p * width + l) = x;
                if let Some(sums) = sums {
                    *sums.add(l) = *sums.add(l) + x;
                }
            }
        }
    }
    if lanes < width {
        for p in 0..kc {
            for l in lanes..width {
                *dst.add(p * width + l) = T::ZERO;
            }
        }
    }
}
