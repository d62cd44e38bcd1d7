"""``matgrad.matmul``: :func:`numpy.matmul`'s semantics on matgrad's GEMM.

The shape rules are :mod:`matgrad._shapes`'s, the array preparation :mod:`matgrad._arrays`'s;
this module adds what only matmul has: array-likes, dtype promotion with NumPy's fallback for
the dtypes matgrad does not compute, and ``out=``.
"""

from __future__ import annotations

import numpy as np

from . import _matgrad
from ._arrays import F32, F64, kernel_ready
from ._shapes import check_out_shape, matmul_shapes


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
        if (nd >= 2 and b.ndim == nd and (dtype is F32 or dtype is F64) and b.dtype is dtype
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


def _check_out(out, s, dtype: np.dtype, shapes: str) -> tuple:
    """Checks ``out`` as NumPy's matmul does; returns it and the batch shape it implies."""
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError(f"matmul: out must be an array or a 1-tuple, got a {len(out)}-tuple")
        out = out[0]
    if not isinstance(out, np.ndarray):
        raise TypeError(f"matmul: out must be a numpy.ndarray, got {type(out).__name__}")
    out_batch = check_out_shape(out.shape, s, shapes)
    if not np.can_cast(dtype, out.dtype, casting="same_kind"):
        raise TypeError(
            f"Cannot cast ufunc 'matmul' output from {dtype!r} to {out.dtype!r} "
            "with casting rule 'same_kind'"
        )
    if not out.flags.writeable:
        raise ValueError("matmul: output array is read-only")
    return out, out_batch


def _matmul_general(a, b, out):
    a = np.asarray(a)
    b = np.asarray(b)
    s = matmul_shapes("matmul", a.shape, b.shape)
    dtype = np.result_type(a.dtype, b.dtype)
    if dtype != F32 and dtype != F64:
        # Not accelerated: NumPy computes integers, bool, complex, float16 and objects.
        return np.matmul(a, b) if out is None else np.matmul(a, b, out=out)

    batch = s.batch
    if out is not None:
        out, batch = _check_out(out, s, dtype, f"{a.shape} and {b.shape}")
    full_shape = batch + (s.m, s.n)
    result_shape = batch + s.core

    in_place = (
        out is not None
        and out.dtype == dtype
        and out.dtype.isnative
        and out.flags.aligned
        and not any(st % out.itemsize for st in out.strides)
        and not np.may_share_memory(out, a)
        and not np.may_share_memory(out, b)
    )
    # Adding or removing length-1 axes never copies, so this view writes into out.
    target = out.reshape(full_shape) if in_place else np.empty(full_shape, dtype)

    if target.size:
        a2 = kernel_ready(a.reshape(s.a), dtype)
        b2 = kernel_ready(b.reshape(s.b), dtype)
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
