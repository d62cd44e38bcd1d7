//! Running the core's work for a Python call: without the GIL when it is big enough to be
//! worth releasing it, and with the core's out-of-memory unwind ([`OutOfMemory`]) turned into
//! MemoryError. Any other panic goes on to pyo3, which raises it as PanicException.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use matgrad_core::OutOfMemory;
use pyo3::exceptions::PyMemoryError;
use pyo3::prelude::*;

/// Products of at least this many multiply-adds release the GIL while they compute (below it,
/// releasing and taking it back costs more than other threads could gain).
pub(crate) const RELEASE_GIL_WORK: usize = 64 * 64 * 64;

/// Runs `work`, without the GIL when `size` multiply-adds make it worth it.
pub(crate) fn compute<R: Send>(py: Python<'_>, size: usize, work: impl FnOnce() -> R + Send) -> PyResult<R> {
    // AssertUnwindSafe: on an unwind the outputs are left partly written, which the caller
    // never sees (the call raises); nothing else is shared with the work.
    let guarded = move || catch_unwind(AssertUnwindSafe(work));
    let result = if size >= RELEASE_GIL_WORK { py.detach(guarded) } else { guarded() };
    result.map_err(|payload| match payload.downcast::<OutOfMemory>() {
        Ok(oom) => PyMemoryError::new_err(format!("matgrad: could not allocate {} bytes of scratch memory", oom.bytes)),
        Err(other) => resume_unwind(other),
    })
}

/// [`compute`] that always releases the GIL (for the functions that take their arrays
/// prepared by the Python layer, whose work is rarely small).
pub(crate) fn compute_detached<R: Send>(py: Python<'_>, work: impl FnOnce() -> R + Send) -> PyResult<R> {
    compute(py, usize::MAX, work)
}
