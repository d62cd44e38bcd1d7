//! Reusable, 64-byte-aligned scratch memory for packed panels.
//!
//! Each thread keeps its own buffer between calls, so a GEMM allocates only the first time a
//! thread needs a larger one. The buffer is taken out of the thread-local slot while in use
//! (and put back afterwards), so a nested call on the same thread simply allocates afresh.

use std::cell::Cell;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    static SPARE: Cell<Vec<Line>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of at least `len` elements of `T` (contents unspecified:
/// zeroed or left over from an earlier use, never uninitialized).
pub(crate) fn with_scratch<T: crate::Element, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    assert!(core::mem::align_of::<T>() <= 64);
    let bytes = len * core::mem::size_of::<T>();
    let lines = bytes.div_ceil(64);
    let mut buf = SPARE.with(|s| s.take());
    if buf.len() < lines {
        buf = vec![Line([0; 64]); lines];
    }
    // SAFETY: the buffer holds `lines * 64 >= len * size_of::<T>()` initialized bytes, is
    // 64-byte aligned (>= align_of::<T>()), and T (f32/f64) is valid for any bit pattern.
    let slice = unsafe { core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
    let result = f(slice);
    SPARE.with(|s| {
        let other = s.take();
        s.set(if other.len() > buf.len() { other } else { buf });
    });
    result
}
