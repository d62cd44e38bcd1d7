//! Reusable, 64-byte-aligned scratch memory for packed panels.
//!
//! Each thread keeps a few buffers between calls (a GEMM holds two at once: the A block and
//! a B block; a training step of `mlp` holds its activations around them), so it allocates
//! only the first time a thread needs a larger one. A buffer is taken out of the thread-local
//! pool while in use and put back afterwards, so a nested call on the same thread simply
//! allocates afresh.
//!
//! An allocation that fails unwinds with an [`OutOfMemory`] payload instead of aborting the
//! process (Rust's default), so that the caller — Python, through the glue — gets an error.

use std::cell::RefCell;
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

/// `lines` zeroed lines, or an [`OutOfMemory`] unwind.
fn allocate(lines: usize) -> Vec<Line> {
    let mut buf = Vec::new();
    if buf.try_reserve_exact(lines).is_err() {
        out_of_memory(lines.saturating_mul(64));
    }
    buf.resize(lines, Line([0; 64]));
    buf
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Buffers kept per thread.
const POOL_SIZE: usize = 3;

thread_local! {
    static SPARE: RefCell<Vec<Vec<Line>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of at least `len` elements of `T` (contents unspecified:
/// zeroed or left over from an earlier use, never uninitialized).
pub(crate) fn with_scratch<T: crate::Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    assert!(core::mem::align_of::<T>() <= 64);
    let bytes = len.saturating_mul(core::mem::size_of::<T>());
    let lines = bytes.div_ceil(64);
    // (Checked before the pool is looked at, so that an injected failure does not depend on
    // what earlier calls left there.)
    if bytes >= FAIL_FROM.load(Ordering::Relaxed) {
        out_of_memory(bytes);
    }
    // The smallest spare that is large enough, else a new one.
    let spare = SPARE.with(|s| {
        let mut pool = s.borrow_mut();
        let best = (0..pool.len()).filter(|&i| pool[i].len() >= lines).min_by_key(|&i| pool[i].len());
        best.map(|i| pool.swap_remove(i))
    });
    let mut buf = spare.unwrap_or_else(|| allocate(lines));
    // SAFETY: the buffer holds `lines * 64 >= len * size_of::<T>()` initialized bytes, is
    // 64-byte aligned (>= align_of::<T>()), and T (f32/f64) is valid for any bit pattern.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
    let result = f(slice);
    SPARE.with(|s| {
        let mut pool = s.borrow_mut();
        pool.push(buf);
        if pool.len() > POOL_SIZE {
            // Drop the smallest: the large ones are the expensive ones to get again.
            let smallest = (0..pool.len()).min_by_key(|&i| pool[i].len()).unwrap_or(0);
            pool.swap_remove(smallest);
        }
    });
    result
}
