//! Reusable, 64-byte-aligned scratch memory for packed panels.
//!
//! Each thread keeps a few buffers between calls (a GEMM holds two at once: the A block and
//! a B block; a training step of `mlp` holds its activations around them), so it allocates
//! only the first time a thread needs a larger one. A buffer is taken out of the thread-local
//! pool while in use and put back afterwards, so a nested call on the same thread simply
//! allocates afresh.
//!
//! Large buffers (a packed B block is about half of L2, its micro-panels streamed through the
//! kernel over and over) sit on whole 2 MiB extents advised for transparent huge pages on
//! Linux: one TLB entry covers 2 MiB instead of 4 KiB, and a first use faults once per 2 MiB
//! instead of once per page. Where the kernel declines the advice they are plain pages.
//!
//! An allocation that fails unwinds with an [`OutOfMemory`] payload instead of aborting the
//! process (Rust's default), so that the caller — Python, through the glue — gets an error.

use std::alloc::Layout;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The panic payload of a scratch allocation that failed: how many bytes were asked for.
/// Raised with `resume_unwind` (no panic message is printed); the thread team carries it to
/// the caller like any panic of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory {
    pub bytes: usize,
}

/// Allocations of at least this many bytes fail (usize::MAX: none do): fault injection for
/// tests of the out-of-memory path, which real memory pressure cannot reach reliably.
static FAIL_FROM: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Makes every later scratch allocation of `bytes` or more fail as if memory were exhausted
/// (`usize::MAX` turns that off). For tests only; it applies to every thread.
#[doc(hidden)]
pub fn fail_allocations_from(bytes: usize) {
    FAIL_FROM.store(bytes, Ordering::Relaxed);
}

fn out_of_memory(bytes: usize) -> ! {
    std::panic::resume_unwind(Box::new(OutOfMemory { bytes }))
}

/// A transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;
/// Buffers from this size up take whole huge pages (rounded up, so at most half of one is
/// spare); smaller ones would waste most of theirs.
const HUGE_MIN_BYTES: usize = 1 << 20;
/// Every buffer's alignment below that: a cache line.
const LINE: usize = 64;

/// Zeroed scratch memory: `bytes` of it at `ptr`, allocated with `layout`.
struct Buffer {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Buffer {
    /// At least `bytes` zeroed bytes, or an [`OutOfMemory`] unwind.
    fn new(bytes: usize) -> Buffer {
        let align = if bytes >= HUGE_MIN_BYTES { HUGE_PAGE } else { LINE };
        let size = bytes.max(1).checked_next_multiple_of(align);
        let Some(layout) = size.and_then(|size| Layout::from_size_align(size, align).ok()) else { out_of_memory(bytes) };
        let size = layout.size();
        // SAFETY: the layout's size is non-zero.
        let Some(ptr) = NonNull::new(unsafe { std::alloc::alloc(layout) }) else { out_of_memory(bytes) };
        if align == HUGE_PAGE {
            advise_huge_pages(ptr.as_ptr(), size);
        }
        // Zeroed after the advice, so that the first touch of each extent faults in a huge page.
        // SAFETY: `ptr` holds `size` writable bytes.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, size) };
        Buffer { ptr, layout }
    }

    fn bytes(&self) -> usize {
        self.layout.size()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: allocated in Buffer::new with this layout, and freed only here.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Asks Linux to back `len` bytes at `ptr` (whole 2 MiB extents) with transparent huge pages;
/// a refusal (THP off, or another OS) leaves them as they are.
fn advise_huge_pages(ptr: *mut u8, len: usize) {
    // SAFETY: the range is memory this process owns; the advice changes how it is paged,
    // never its contents (and a refusal is harmless, so its result is not looked at).
    #[cfg(target_os = "linux")]
    unsafe {
        libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// Buffers kept per thread.
const POOL_SIZE: usize = 3;

thread_local! {
    static SPARE: RefCell<Vec<Buffer>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of at least `len` elements of `T` (contents unspecified:
/// zeroed or left over from an earlier use, never uninitialized).
pub(crate) fn with_scratch<T: crate::Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    assert!(core::mem::align_of::<T>() <= LINE);
    let bytes = len.saturating_mul(core::mem::size_of::<T>());
    // (Checked before the pool is looked at, so that an injected failure does not depend on
    // what earlier calls left there.)
    if bytes >= FAIL_FROM.load(Ordering::Relaxed) {
        out_of_memory(bytes);
    }
    // The smallest spare that is large enough, else a new one.
    let spare = SPARE.with(|s| {
        let mut pool = s.borrow_mut();
        let best = (0..pool.len()).filter(|&i| pool[i].bytes() >= bytes).min_by_key(|&i| pool[i].bytes());
        best.map(|i| pool.swap_remove(i))
    });
    let buf = spare.unwrap_or_else(|| Buffer::new(bytes));
    // SAFETY: the buffer holds `bytes() >= len * size_of::<T>()` initialized bytes, is at
    // least 64-byte aligned (>= align_of::<T>()), is used by this call alone (out of the pool
    // until it returns), and T (f32/f64) is valid for any bit pattern.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf.ptr.as_ptr().cast::<T>(), len) };
    let result = f(slice);
    SPARE.with(|s| {
        let mut pool = s.borrow_mut();
        pool.push(buf);
        if pool.len() > POOL_SIZE {
            // Drop the smallest: the large ones are the expensive ones to get again.
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].bytes()).unwrap_or(0);
            pool.swap_remove(smallest);
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_take_whole_huge_pages_small_ones_lines() {
        for (len, align) in
            [(1usize, LINE), (1000, LINE), (HUGE_MIN_BYTES / 4 - 1, LINE), (HUGE_MIN_BYTES / 4, HUGE_PAGE), (3 << 20, HUGE_PAGE)]
        {
            // (A thread of its own each: a spare of the pool could serve the next size.)
            std::thread::spawn(move || {
                with_scratch::<f32, _>(len, |s| {
                    assert_eq!(s.len(), len);
                    assert_eq!(s.as_ptr() as usize % align, 0, "{len} floats");
                })
            })
            .join()
            .unwrap();
        }
    }

    #[test]
    fn a_new_buffer_is_zeroed_and_all_of_it_writable() {
        let b = Buffer::new(HUGE_PAGE + 1);
        assert_eq!(b.bytes(), 2 * HUGE_PAGE);
        // SAFETY: the buffer's bytes are initialized and owned here.
        let bytes = unsafe { core::slice::from_raw_parts_mut(b.ptr.as_ptr(), b.bytes()) };
        assert!(bytes.iter().all(|&x| x == 0));
        bytes.fill(7);
    }
}
