//! Reusable, 64-byte-aligned scratch memory for packed panels.
//!
//! Each thread keeps a few buffers between calls (a GEMM holds two at once: the A block and
//! a B block; a training step of `mlp` holds its activations around them), so it allocates
//! only the first time a thread needs a larger one. A buffer is taken out of the thread-local
//! pool while in use and put back afterwards, so a nested call on the same thread simply
//! allocates afresh.

use std::cell::RefCell;

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
    let bytes = len * core::mem::size_of::<T>();
    let lines = bytes.div_ceil(64);
    // The smallest spare that is large enough, else a new one.
    let spare = SPARE.with(|s| {
        let mut pool = s.borrow_mut();
        let best = (0..pool.len()).filter(|&i| pool[i].len() >= lines).min_by_key(|&i| pool[i].len());
        best.map(|i| pool.swap_remove(i))
    });
    let mut buf = spare.unwrap_or_else(|| vec![Line([0; 64]); lines]);
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
