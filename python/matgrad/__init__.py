"""matgrad: matrix multiplication and the linear layer, forward and backward, fast from NumPy.

The arithmetic runs in matgrad's own blocked SIMD GEMM (Rust, AVX-512 / AVX2 / NEON kernels
chosen at run time, threads from matgrad's own pool, GIL released). This module holds the
public API; the NumPy semantics live in ``_shapes`` (shape rules), ``_arrays`` (array
preparation), ``_matmul`` (matmul's dtypes and ``out=``) and ``_grad`` (the gradients).

float32 and float64 are computed by matgrad. Other result dtypes (integers, bool, complex,
float16, object) are handed to NumPy unchanged, so they work but are not accelerated.
"""

from __future__ import annotations

import os

import numpy as np

from . import _matgrad
from ._grad import linear, linear_backward, matmul_backward
from ._matgrad import amx_supported, available_kernels, get_matmul_precision, get_num_threads, set_matmul_precision, simd_kernel
from ._matmul import matmul

__version__: str = _matgrad.__version__

__all__ = [
    "matmul",
    "matmul_backward",
    "linear",
    "linear_backward",
    "set_num_threads",
    "get_num_threads",
    "set_thread_pool",
    "get_thread_pool",
    "simd_kernel",
    "available_kernels",
    "fma_peak",
    "set_matmul_precision",
    "get_matmul_precision",
    "amx_supported",
    "nn",
    "__version__",
]


def fma_peak(dtype="float32", threads: int | None = None, seconds: float = 0.2) -> float:
    """GFLOP/s of this CPU's FMA peak, measured now: a register-only multiply-add loop on the
    widest kernel path (``simd_kernel()``'s ISA), ``threads`` threads (default: matgrad's
    count) for about ``seconds``. Products' speeds read as a share of it (the host's clock
    moves, so measure it beside them)."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"fma_peak: dtype must be float32 or float64, got {dt}")
    n = get_num_threads() if threads is None else threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"fma_peak: threads must be an int >= 1, got {threads!r}")
    return _matgrad.fma_peak(dt == np.float64, int(n), float(seconds))


def set_num_threads(n: int) -> None:
    """Set the number of threads matgrad computes with (at least 1)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    _matgrad.set_num_threads(int(n))


def set_thread_pool(pool: str, library: str | None = None) -> None:
    """Where matgrad's threads come from: ``"matgrad"``, its own (the default), or
    ``"openmp"``, the team of the GNU OpenMP runtime (libgomp) already loaded in this process,
    which is torch's: torch's threads spin for milliseconds after each operator, and a GEMM of
    matgrad's between two of them on its own threads would share a core with that spin.
    ``import matgrad.torch`` selects ``"openmp"`` where torch computes on OpenMP (unless
    ``MATGRAD_THREAD_POOL=matgrad``). ``library``: part of the libgomp's path, to pick one
    where several are loaded. The thread count (:func:`set_num_threads`) stays; results are
    the same bits on either pool. RuntimeError if no libgomp is loaded."""
    if not isinstance(pool, str):
        raise TypeError(f"set_thread_pool: pool must be a str, got {type(pool).__name__}")
    if pool not in ("matgrad", "openmp"):
        raise ValueError(f"set_thread_pool: pool must be 'matgrad' or 'openmp', got {pool!r}")
    if library is not None and not isinstance(library, str):
        raise TypeError(f"set_thread_pool: library must be a str or None, got {type(library).__name__}")
    _matgrad.set_thread_pool(pool, library)


def get_thread_pool() -> str:
    """``"matgrad"`` or ``"openmp"``: where matgrad's threads come from (see
    :func:`set_thread_pool`)."""
    return _matgrad.get_thread_pool()[0]


def _configure_from_environment() -> None:
    threads = os.environ.get("MATGRAD_NUM_THREADS")
    if threads:
        try:
            count = int(threads)
        except ValueError:
            raise ValueError(f"MATGRAD_NUM_THREADS must be an integer, got {threads!r}") from None
        set_num_threads(count)
    kernel = os.environ.get("MATGRAD_KERNEL")
    if kernel:
        _matgrad.force_kernel(kernel)


_configure_from_environment()

from . import nn  # noqa: E402  (after the kernels and threads are configured)
