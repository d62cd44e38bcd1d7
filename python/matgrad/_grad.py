"""Gradients: matmul backward and the linear layer, forward and backward.

Every gradient is a GEMM on strided views (transposes are views, never copies), computed by
matgrad's kernels; broadcast batch dimensions are summed back to each operand's own shape.
"""

from __future__ import annotations

import math

import numpy as np

from . import _matgrad

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_LAYOUTS = ("in_out", "out_in")


def _float_dtype(func: str, *arrays) -> np.dtype:
    dtypes = [a.dtype for a in arrays if a is not None]
    # The common case, all native float32 or all float64 (NumPy's canonical dtype objects),
    # by identity: np.result_type and dtype equality cost microseconds.
    first = dtypes[0]
    if (first is _F32 or first is _F64) and all(d is first for d in dtypes):
        return first
    dtype = np.result_type(*dtypes)
    if dtype != _F32 and dtype != _F64:
        names = ", ".join(str(a.dtype) for a in arrays if a is not None)
        raise TypeError(f"{func}: float32 or float64 operands required, got dtypes {names}")
    return dtype


def _ready(x: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    """``x`` in a form the kernels read in place (a copy only for another dtype, non-native
    byte order, or unaligned data)."""
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


def _is_layout_out_in(weight_layout: str) -> bool:
    if weight_layout not in _LAYOUTS:
        raise ValueError(f"weight_layout must be 'in_out' or 'out_in', got {weight_layout!r}")
    return weight_layout == "out_in"


def _linear_dims(func: str, x: np.ndarray, w: np.ndarray, out_in: bool, layout: str) -> tuple:
    if w.ndim != 2:
        raise ValueError(f"{func}: weight must be 2-D, got shape {w.shape}")
    n_out, n_in = w.shape if out_in else w.shape[::-1]
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise ValueError(
            f"{func}: x of shape {x.shape} does not fit a weight of shape {w.shape} "
            f"(weight_layout={layout!r} means in={n_in}, out={n_out})"
        )
    return n_in, n_out


def linear(x, weight, bias=None, /, *, weight_layout: str = "in_out"):
    """The linear layer: ``x @ W + bias`` (``weight_layout="in_out"``, W of shape (in, out))
    or torch's ``x @ W.T + bias`` (``"out_in"``, W of shape (out, in)).

    ``x`` has any number of leading dimensions (..., in); the result is (..., out). The bias
    is added as the GEMM stores each tile of the result, not in a second pass.
    """
    out_in = _is_layout_out_in(weight_layout)
    x = np.asarray(x)
    w = np.asarray(weight)
    b = None if bias is None else np.asarray(bias)
    n_in, n_out = _linear_dims("linear", x, w, out_in, weight_layout)
    if b is not None and b.shape != (n_out,):
        raise ValueError(
            f"linear: bias of shape {b.shape} does not fit a weight of shape {w.shape} "
            f"(expected ({n_out},))"
        )
    dtype = _float_dtype("linear", x, w, b)
    x2 = _ready(x.reshape(_rows(x), n_in), dtype)
    y = np.empty((x2.shape[0], n_out), dtype)
    _matgrad.linear_forward(x2, _ready(w, dtype), _ready(b, dtype), out_in, False, y)
    return y.reshape(x.shape[:-1] + (n_out,))


def linear_backward(
    grad_y,
    x,
    weight,
    /,
    *,
    weight_layout: str = "in_out",
    grad_x: bool = True,
    grad_weight: bool = True,
    grad_bias: bool = True,
):
    """Gradients of :func:`linear` given ``grad_y`` = ∂L/∂y.

    Returns ``(grad_x, grad_weight, grad_bias)``, ``None`` for those not asked for:
    grad_x = G Wᵀ (..., in); grad_weight in the weight's own layout (Xᵀ G, or Gᵀ X for
    ``"out_in"``); grad_bias = the column sums of G, summed while G is packed for the
    grad_weight GEMM. Leading dimensions of ``x`` and ``grad_y`` are flattened.
    """
    out_in = _is_layout_out_in(weight_layout)
    g = np.asarray(grad_y)
    x = np.asarray(x)
    w = np.asarray(weight)
    n_in, n_out = _linear_dims("linear_backward", x, w, out_in, weight_layout)
    if g.shape != x.shape[:-1] + (n_out,):
        raise ValueError(
            f"linear_backward: grad_y has shape {g.shape}, but x of shape {x.shape} and weight "
            f"of shape {w.shape} give y of shape {x.shape[:-1] + (n_out,)}"
        )
    dtype = _float_dtype("linear_backward", g, x, w)
    g2 = _ready(g.reshape(_rows(g), n_out), dtype)
    x2 = _ready(x.reshape(_rows(x), n_in), dtype)
    gx = np.empty(x2.shape, dtype) if grad_x else None
    gw = np.empty(w.shape, dtype) if grad_weight else None
    gb = np.empty(n_out, dtype) if grad_bias else None
    if gx is not None or gw is not None or gb is not None:
        _matgrad.linear_backward(g2, x2, _ready(w, dtype), out_in, gx, gw, gb)
    return (None if gx is None else gx.reshape(x.shape), gw, gb)


def _sum_to_shape(x: np.ndarray, shape: tuple) -> np.ndarray:
    """Sums ``x`` over the dimensions that broadcasting added to ``shape``."""
    lead = x.ndim - len(shape)
    if lead:
        x = x.sum(axis=tuple(range(lead)))
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and x.shape[d] != 1)
    if axes:
        x = x.sum(axis=axes, keepdims=True)
    return x


def matmul_backward(grad_out, a, b, /, *, grad_a: bool = True, grad_b: bool = True):
    """Gradients of ``matmul(a, b)`` given ``grad_out`` = ∂L/∂C.

    Returns ``(grad_a, grad_b)`` with the shapes of ``a`` and ``b`` (``None`` for one not asked
    for): ∂L/∂A = G Bᵀ and ∂L/∂B = Aᵀ G, with 1-D operands and broadcast batch dimensions
    handled as torch's autograd of ``torch.matmul`` handles them.
    """
    from . import matmul

    a = np.asarray(a)
    b = np.asarray(b)
    g = np.asarray(grad_out)
    shapes = f"{a.shape} and {b.shape}"
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul_backward: operands must have at least 1 dimension, got {shapes}")
    a2 = a if a.ndim >= 2 else a[np.newaxis, :]
    b2 = b if b.ndim >= 2 else b[:, np.newaxis]
    (m, k), (k2, n) = a2.shape[-2:], b2.shape[-2:]
    if k != k2:
        raise ValueError(f"matmul_backward: shapes {shapes} are not aligned ({k} != {k2})")
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul_backward: batch dimensions of {shapes} do not broadcast") from None
    result_shape = batch + ((m,) if a.ndim >= 2 else ()) + ((n,) if b.ndim >= 2 else ())
    if g.shape != result_shape:
        raise ValueError(
            f"matmul_backward: grad_out has shape {g.shape}, but operands {shapes} give "
            f"a result of shape {result_shape}"
        )
    dtype = _float_dtype("matmul_backward", g, a, b)
    g2 = _ready(g.reshape(batch + (m, n)), dtype)
    a2 = _ready(a2, dtype)
    b2 = _ready(b2, dtype)

    ga = gb = None
    if grad_a:
        ga = _sum_to_shape(matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    if grad_b:
        if b2.ndim == 2 and len(batch):
            # A 2-D b is shared by every batch: Σ_batch A_iᵀ G_i is one GEMM with the batch
            # folded into k (a view when the batch and row dimensions merge).
            gb = matmul(_as_rows(a2, batch).T, g2.reshape(_rows(g2), n))
        else:
            gb = _sum_to_shape(matmul(np.swapaxes(a2, -1, -2), g2), b2.shape)
        gb = gb.reshape(b.shape)
    return ga, gb


def _as_rows(x: np.ndarray, batch: tuple) -> np.ndarray:
    """``x`` (..., m, k) broadcast to ``batch`` and seen as (batch·m, k): a view when the
    dimensions merge, else one copy (still far smaller than the per-batch gradients)."""
    full = np.broadcast_to(x, batch + x.shape[-2:])
    return full.reshape(_rows(full), x.shape[-1])


def _rows(x: np.ndarray) -> int:
    """The number of rows of ``x`` with its leading dimensions flattened (explicit, since
    ``reshape(-1, 0)`` is ambiguous for an empty array)."""
    return math.prod(x.shape[:-1])
