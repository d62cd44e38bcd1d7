"""matgrad: matrix multiplication and the linear layer, forward and backward, fast from NumPy.

The arithmetic runs in matgrad's own blocked SIMD GEMM (Rust, AVX-512 / AVX2 / NEON kernels
chosen at run time, threads from matgrad's own pool, GIL released). This module holds the
NumPy semantics: array-likes, 1-D operands, broadcasting, dtype promotion and ``out=``.

float32 and float64 are computed by matgrad. Other result dtypes (integers, bool, complex,
float16, object) are handed to NumPy unchanged, so they work but are not accelerated.
"""

from __future__ import annotations

import os

import numpy as np

from . import _matgrad
from ._grad import linear, linear_backward, matmul_backward
from ._matgrad import available_kernels, get_num_threads, simd_kernel

__version__: str = _matgrad.__version__

__all__ = [
    "matmul",
    "matmul_backward",
    "linear",
    "linear_backward",
    "set_num_threads",
    "get_num_threads",
    "simd_kernel",
    "available_kernels",
    "nn",
    "__version__",
]

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)


def set_num_threads(n: int) -> None:
    """Set the number of threads matgrad computes with (at least 1)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    _matgrad.set_num_threads(int(n))


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


def _compute_ready(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` as an array the kernels can read in place: dtype ``dtype``, native byte order,
    aligned, strides whole elements. Views that already are pass through without a copy."""
    if x.dtype != dtype or not x.dtype.isnative:
        return x.astype(dtype.newbyteorder("="))
    if not x.flags.aligned or any(s % x.itemsize for s in x.strides):
        return np.array(x, dtype=dtype, copy=True)
    return x


def _check_out(out, batch: tuple, core: tuple, dtype: np.dtype, shapes: str) -> tuple:
    """Checks ``out`` as NumPy's matmul does; returns it and the batch shape it implies (its
    leading dimensions may broadcast the operands further)."""
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError(f"matmul: out must be an array or a 1-tuple, got a {len(out)}-tuple")
        out = out[0]
    if not isinstance(out, np.ndarray):
        raise TypeError(f"matmul: out must be a numpy.ndarray, got {type(out).__name__}")
    expected = batch + core
    out_batch = out.shape[: out.ndim - len(core)]
    if out.ndim < len(core) or out.shape[out.ndim - len(core) :] != core:
        raise ValueError(
            f"matmul: out has shape {out.shape}, but operands {shapes} give shape {expected}"
        )
    try:
        fits = np.broadcast_shapes(batch, out_batch) == out_batch
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"matmul: non-broadcastable output operand with shape {out.shape} doesn't match "
            f"the broadcast shape {expected} of operands {shapes}"
        )
    if not np.can_cast(dtype, out.dtype, casting="same_kind"):
        raise TypeError(
            f"Cannot cast ufunc 'matmul' output from {dtype!r} to {out.dtype!r} "
            "with casting rule 'same_kind'"
        )
    if not out.flags.writeable:
        raise ValueError("matmul: output array is read-only")
    return out, out_batch


def matmul(a, b, /, out=None):
    """Matrix product of two arrays, exactly as :func:`numpy.matmul`.

    ``a`` (..., m, k) and ``b`` (..., k, n) give (..., m, n), batch dimensions broadcast.
    A 1-D ``a`` is a row vector and a 1-D ``b`` a column vector, and the added axis is removed
    from the result (vector @ vector is a NumPy scalar). Transposed, sliced, reversed and
    broadcast views are read in place, never copied.

    ``out`` (positional or keyword) receives the result and is returned; it may be a
    non-contiguous view, may overlap ``a`` or ``b``, and must have the result's shape and a
    dtype the result casts to under ``same_kind``.

    >>> import numpy as np, matgrad
    >>> matgrad.matmul(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 1.0]))
    array([3., 7.])
    """
    # The common case, kept short (the general path costs ~10-25 us of Python): native float
    # arrays of one dtype, matrices or stacks of them with the same batch shape, and an `out`,
    # if any, of exactly the result's shape and dtype that overlaps neither.
    if type(a) is np.ndarray and type(b) is np.ndarray:
        dtype = a.dtype
        nd = a.ndim
        if (nd >= 2 and b.ndim == nd and (dtype is _F32 or dtype is _F64) and b.dtype is dtype
                and a.shape[-1] == b.shape[-2] and a.shape[:-2] == b.shape[:-2]):
            shape = a.shape[:-1] + b.shape[-1:]
            if out is None:
                c = np.empty(shape, dtype)
            elif (type(out) is np.ndarray and out.dtype is dtype and out.shape == shape
                    and out.flags.writeable and not np.may_share_memory(out, a)
                    and not np.may_share_memory(out, b)):
                c = out
            else:
                c = None
            if c is not None:
                try:
                    _matgrad.matmul(a, b, c)
                    return c
                except ValueError:
                    pass  # unaligned data or odd strides: the general path copies them
    return _matmul_general(a, b, out)


def _matmul_general(a, b, out):
    a = np.asarray(a)
    b = np.asarray(b)
    shapes = f"{a.shape} and {b.shape}"
    for i, x in enumerate((a, b)):
        if x.ndim == 0:
            raise ValueError(
                f"matmul: input operand {i} does not have enough dimensions "
                f"(has 0, requires at least 1); shapes {shapes}"
            )
    a2 = a if a.ndim >= 2 else a[np.newaxis, :]
    b2 = b if b.ndim >= 2 else b[:, np.newaxis]
    m, k = a2.shape[-2:]
    k2, n = b2.shape[-2:]
    if k != k2:
        raise ValueError(
            f"matmul: shapes {shapes} are not aligned: "
            f"{k} (dimension {a.ndim - 1} of a) != {k2} (dimension {max(b.ndim - 2, 0)} of b)"
        )
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(
            f"matmul: the batch dimensions of shapes {shapes} cannot be broadcast together"
        ) from None

    dtype = np.result_type(a.dtype, b.dtype)
    if dtype != _F32 and dtype != _F64:
        # Not accelerated: NumPy computes integers, bool, complex, float16 and objects.
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)

    core = ((m,) if a.ndim >= 2 else ()) + ((n,) if b.ndim >= 2 else ())
    if out is not None:
        out, batch = _check_out(out, batch, core, dtype, shapes)
    full_shape = batch + (m, n)
    result_shape = batch + core

    in_place = (
        out is not None
        and out.dtype == dtype
        and out.dtype.isnative
        and out.flags.aligned
        and not any(s % out.itemsize for s in out.strides)
        and not np.may_share_memory(out, a)
        and not np.may_share_memory(out, b)
    )
    # Adding or removing length-1 axes never copies, so this view writes into out.
    target = out.reshape(full_shape) if in_place else np.empty(full_shape, dtype)

    if target.size:
        a2 = _compute_ready(a2, dtype)
        b2 = _compute_ready(b2, dtype)
        nd = len(full_shape)
        a3 = a2.reshape((1,) * (nd - a2.ndim) + a2.shape)
        b3 = b2.reshape((1,) * (nd - b2.ndim) + b2.shape)
        _matgrad.matmul(a3, b3, target)

    if out is not None:
        if not in_place:
            np.copyto(out, target.reshape(result_shape), casting="same_kind")
        return out
    result = target.reshape(result_shape)
    return result[()] if result.ndim == 0 else result
