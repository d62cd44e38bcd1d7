"""``matgrad.matmul``: :func:`numpy.matmul`'s semantics on matgrad's GEMM.

The shape rules are :mod:`matgrad._shapes`'s, the array preparation :mod:`matgrad._arrays`'s;
this module adds what only matmul has: array-likes, dtype promotion with NumPy's fallback for
the dtypes matgrad does not compute, and ``out=``.
"""

from __future__ import annotations

import numpy as np

from . import _matgrad
from ._arrays import F32, F64, as_float32, is_bfloat16, kernel_ready, may_overlap_itself
from ._shapes import check_out_shape, matmul_shapes


#: The public function: the common call (exact float32/float64 ndarrays of one dtype,
#: matrices, vectors or stacks of one batch shape, an ``out`` of exactly the result's shape and
#: dtype that overlaps nothing) runs end to end in the extension, which hands every other call
#: to :func:`matmul_general`.
matmul = _matgrad.matmul


def _check_out(out, dtype: np.dtype):
    """Checks ``out`` as NumPy's matmul does before it looks at any shape (so that a call with
    several faults raises the error NumPy raises): an ndarray, writable, and one the result
    casts to. Returns it (unwrapped from a 1-tuple)."""
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError(f"matmul: out must be an array or a 1-tuple, got a {len(out)}-tuple")
        out = out[0]
    if not isinstance(out, np.ndarray):
        raise TypeError(f"matmul: out must be a numpy.ndarray, got {type(out).__name__}")
    if not out.flags.writeable:
        raise ValueError("matmul: output array is read-only")
    if not np.can_cast(dtype, out.dtype, casting="same_kind"):
        raise TypeError(
            f"Cannot cast ufunc 'matmul' output from {dtype!r} to {out.dtype!r} "
            "with casting rule 'same_kind'"
        )
    return out


def matmul_general(a, b, out, precision=None):
    """:func:`matmul` for what the extension does not take itself: array-likes, broadcast
    batches, mixed or other dtypes, unaligned or byte-swapped data, and ``out`` of another
    dtype or overlapping an operand or itself (computed into a temporary, then copied, as NumPy
    does)."""
    a = np.asarray(a)
    b = np.asarray(b)
    dtype = np.result_type(a.dtype, b.dtype)
    if is_bfloat16(dtype):
        return _matmul_bfloat16(a, b, out, dtype, precision)
    accelerated = dtype == F32 or dtype == F64
    # (An unknown precision name is an error whatever the dtype.)
    precision = _matgrad.resolve_precision(precision, dtype == F32 or not accelerated)
    if out is not None:
        out = _check_out(out, dtype)
    s = matmul_shapes("matmul", a.shape, b.shape)
    if not accelerated:
        # NumPy computes integers, bool, complex, float16 and objects. An out= whose elements
        # share memory goes through a temporary: handed one with a zero stride, NumPy's BLAS
        # path writes nothing at all (OpenBLAS refuses incy = 0).
        if out is None:
            return np.matmul(a, b)
        if may_overlap_itself(out):
            check_out_shape(out.shape, s, f"{a.shape} and {b.shape}")  # (copyto would broadcast)
            np.copyto(out, np.matmul(a, b), casting="same_kind")
            return out
        return np.matmul(a, b, out=out)
    batch = s.batch
    if out is not None:
        batch = check_out_shape(out.shape, s, f"{a.shape} and {b.shape}")
    full_shape = batch + (s.m, s.n)
    result_shape = batch + s.core

    in_place = (
        out is not None
        and out.dtype == dtype
        and out.dtype.isnative
        and out.flags.aligned
        and not any(st % out.itemsize for st in out.strides)
        and not may_overlap_itself(out)
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
        _matgrad.matmul_into(a3, b3, target, precision)

    if out is not None:
        if not in_place:
            np.copyto(out, target.reshape(result_shape), casting="same_kind")
        return out
    result = target.reshape(result_shape)
    return result[()] if result.ndim == 0 else result


def _matmul_bfloat16(a, b, out, bf16: np.dtype, precision):
    """bfloat16 @ bfloat16 (ml_dtypes): the operands widened to float32 (exactly), products
    summed in float32 (at precision "medium", which rounds nothing here, so AMX tiles serve
    where the CPU has them), then one rounding to bfloat16 (to nearest, ties to even), or none
    into a float32 ``out``. Any precision name gives these same results."""
    _matgrad.resolve_precision(precision, True)  # (an unknown name is still an error)
    if out is not None:
        out = _check_out(out, bf16)
        if out.dtype == F32:
            return matmul_general(as_float32(a), as_float32(b), out, "medium")
        check_out_shape(out.shape, matmul_shapes("matmul", a.shape, b.shape), f"{a.shape} and {b.shape}")
    result = matmul_general(as_float32(a), as_float32(b), None, "medium")
    if out is not None:
        np.copyto(out, result, casting="same_kind")  # the one rounding, into out's dtype
        return out
    return np.asarray(result).astype(bf16)[()]  # (a scalar for 1-D @ 1-D, as NumPy gives)
