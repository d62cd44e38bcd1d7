"""Preparing NumPy arrays for the kernels, in one place for every front end.

The kernels read any strides in place (transposed, sliced, reversed and broadcast views), so
an array is copied only when they cannot read it at all: another dtype, non-native byte order,
unaligned data, or strides that are not whole elements.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.dtype(np.float32)
F64 = np.dtype(np.float64)


def kernel_ready(x: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    """``x`` as the kernels read it in place: dtype ``dtype``, native byte order, aligned,
    strides whole elements (``None`` stays ``None``). Views that already are pass through."""
    if x is None:
        return None
    if x.dtype is not dtype and (x.dtype != dtype or not x.dtype.isnative):
        return x.astype(dtype.newbyteorder("="))
    flags = x.flags
    if flags.aligned and (flags.c_contiguous or flags.f_contiguous):
        return x  # contiguous: every stride is a multiple of the item size
    if not flags.aligned or any(s % x.itemsize for s in x.strides):
        return np.array(x, dtype=dtype, copy=True)
    return x


def may_overlap_itself(x: np.ndarray) -> bool:
    """Whether two elements of ``x`` could share memory (an ``as_strided`` view whose rows
    overlap): False only when, with the dimensions sorted by stride, each stride reaches past
    everything the smaller ones span (a sufficient condition, as cheap as NumPy's own first
    check)."""
    dims = sorted((abs(s), n) for s, n in zip(x.strides, x.shape) if n > 1)
    reach = x.itemsize - 1
    for stride, n in dims:
        if stride <= reach:
            return True
        reach += stride * (n - 1)
    return False


def is_bfloat16(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (recognised without importing ml_dtypes)."""
    return dtype.kind == "V" and dtype.name == "bfloat16" and type(dtype).__module__ != "numpy"


def bfloat16_result(*arrays) -> np.dtype | None:
    """The bfloat16 dtype when the result dtype of ``arrays`` (``None`` entries ignored) is
    bfloat16 (all bfloat16: mixed with float32 or float64, ml_dtypes promotes to those), else
    ``None``."""
    dtypes = [a.dtype for a in arrays if a is not None]
    if not any(d.kind == "V" for d in dtypes):
        return None
    dtype = np.result_type(*dtypes)
    return dtype if is_bfloat16(dtype) else None


def as_float32(x: np.ndarray | None) -> np.ndarray | None:
    """A bfloat16 (or any) array as float32: exact for bfloat16, whose values all are float32's."""
    return None if x is None else x.astype(F32)


def rounded_to(dtype: np.dtype, results):
    """Each array of the tuple ``results`` (``None`` stays) rounded once to ``dtype``."""
    return tuple(None if r is None else r.astype(dtype) for r in results)


def float_dtype(func: str, *arrays) -> np.dtype:
    """The float32 or float64 result dtype of ``arrays`` (``None`` entries ignored); TypeError
    naming the dtypes for anything else."""
    dtypes = [a.dtype for a in arrays if a is not None]
    # The common case, all native float32 or all float64 (NumPy's canonical dtype objects),
    # by identity: np.result_type and dtype equality cost microseconds.
    first = dtypes[0]
    if (first is F32 or first is F64) and all(d is first for d in dtypes):
        return first
    dtype = np.result_type(*dtypes)
    if dtype != F32 and dtype != F64:
        names = ", ".join(str(a.dtype) for a in arrays if a is not None)
        raise TypeError(f"{func}: float32 or float64 operands required, got dtypes {names}")
    return dtype


def rows(shape: tuple) -> int:
    """The number of rows of an array of ``shape`` with its leading dimensions flattened
    (explicit, since ``reshape(-1, 0)`` is ambiguous for an empty array)."""
    return math.prod(shape[:-1])


def sum_to_shape(x: np.ndarray, shape: tuple) -> np.ndarray:
    """Sums ``x`` over the dimensions that broadcasting added to ``shape``."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and x.shape[d] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x
