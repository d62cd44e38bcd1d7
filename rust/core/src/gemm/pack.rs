//! Packing: copying blocks of A and B, from any element strides, into the contiguous panel
//! layout the micro-kernel reads (see the kernel contract in `kernel/mod.rs`).
//!
//! Strides may be negative or zero (reversed or broadcast NumPy views), so views are never
//! copied before the GEMM: this is the only place that reads A and B.
//!
//! Packing can also sum what it copies: the row sums of A or the column sums of B come out of
//! the same pass (the bias gradient of a linear layer is the column sums of grad_y).

use crate::element::Element;

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

/// Packs the `mc × kc` block `a` into `ceil(mc/mr)` panels of `mr × kc`, each stored
/// column by column (`dst[q*mr*kc + p*mr + i] = a[q*mr + i, p]`), zero-padding the last.
/// If `row_sums` is given, `row_sums[i] += a[i, p]` for every packed element, p ascending.
///
/// Only panels `panels.start .. panels.end` are packed, so threads can split the work.
///
/// SAFETY: `a` addresses `mc × kc` readable elements; `dst` holds `ceil(mc/mr)*mr*kc`;
/// `row_sums`, if given, holds `mc` writable elements.
pub(crate) unsafe fn pack_a<T: Element>(
    mr: usize,
    mc: usize,
    kc: usize,
    a: Block<T>,
    dst: *mut T,
    row_sums: Option<*mut T>,
    panels: core::ops::Range<usize>,
) {
    for q in panels {
        let i0 = q * mr;
        let rows = mr.min(mc - i0);
        let panel = dst.add(q * mr * kc);
        if a.cs == 1 {
            // Rows are contiguous: read each row once, write it down the panel's column.
            for i in 0..rows {
                let src = core::slice::from_raw_parts(a.at(i0 + i, 0), kc);
                for (p, &x) in src.iter().enumerate() {
                    *panel.add(p * mr + i) = x;
                }
                if let Some(sums) = row_sums {
                    let mut s = *sums.add(i0 + i);
                    for &x in src {
                        s = s + x;
                    }
                    *sums.add(i0 + i) = s;
                }
            }
        } else {
            for p in 0..kc {
                for i in 0..rows {
                    let x = *a.at(i0 + i, p);
                    *panel.add(p * mr + i) = x;
                    if let Some(sums) = row_sums {
                        *sums.add(i0 + i) = *sums.add(i0 + i) + x;
                    }
                }
            }
        }
        if rows < mr {
            for p in 0..kc {
                for i in rows..mr {
                    *panel.add(p * mr + i) = T::ZERO;
                }
            }
        }
    }
}

/// Packs the `kc × nc` block `b` into `ceil(nc/nr)` panels of `kc × nr`, each stored row by
/// row (`dst[q*kc*nr + p*nr + j] = b[p, q*nr + j]`), zero-padding the last.
/// If `col_sums` is given, `col_sums[j] += b[p, j]` for every packed element, p ascending.
///
/// Only panels `panels.start .. panels.end` are packed, so threads can split the work.
///
/// SAFETY: `b` addresses `kc × nc` readable elements; `dst` holds `ceil(nc/nr)*nr*kc`;
/// `col_sums`, if given, holds `nc` writable elements.
pub(crate) unsafe fn pack_b<T: Element>(
    nr: usize,
    nc: usize,
    kc: usize,
    b: Block<T>,
    dst: *mut T,
    col_sums: Option<*mut T>,
    panels: core::ops::Range<usize>,
) {
    for q in panels {
        let j0 = q * nr;
        let cols = nr.min(nc - j0);
        let panel = dst.add(q * nr * kc);
        if b.cs == 1 {
            // Rows are contiguous: each k step is one short memcpy.
            for p in 0..kc {
                let src = b.at(p, j0);
                let out = panel.add(p * nr);
                core::ptr::copy_nonoverlapping(src, out, cols);
                for j in cols..nr {
                    *out.add(j) = T::ZERO;
                }
                if let Some(sums) = col_sums {
                    for j in 0..cols {
                        *sums.add(j0 + j) = *sums.add(j0 + j) + *src.add(j);
                    }
                }
            }
        } else {
            // Columns are (typically) contiguous, as in a transposed view: copy in slabs of
            // SLAB rows so the panel rows being written stay in L1 while every column is read
            // a cache line at a time (a whole panel is larger than L1).
            const SLAB: usize = 16;
            for p0 in (0..kc).step_by(SLAB) {
                let p1 = (p0 + SLAB).min(kc);
                for j in 0..cols {
                    let mut sum = col_sums.map(|s| *s.add(j0 + j));
                    for p in p0..p1 {
                        let x = *b.at(p, j0 + j);
                        *panel.add(p * nr + j) = x;
                        if let Some(s) = sum.as_mut() {
                            *s = *s + x;
                        }
                    }
                    if let (Some(s), Some(sums)) = (sum, col_sums) {
                        *sums.add(j0 + j) = s;
                    }
                }
            }
            for p in 0..kc {
                for j in cols..nr {
                    *panel.add(p * nr + j) = T::ZERO;
                }
            }
        }
    }
}
