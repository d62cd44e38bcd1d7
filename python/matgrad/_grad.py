"""Gradients: matmul backward and the linear layer, forward and backward.

Every gradient is a GEMM on strided views (transposes are views, never copies), computed by
matgrad's kernels; broadcast batch dimensions are summed back to each operand's own shape.
"""

from __future__ import annotations

import numpy as np

from . import _matgrad
from ._arrays import F32, as_float32, bfloat16_result, float_dtype, kernel_ready, rounded_to, rows, sum_to_shape
from ._matmul import matmul
from ._shapes import check_bias, check_grad_y, linear_dims, matmul_backward_shapes, weight_is_out_in

#: The public functions: their common call (exact ndarrays of one float dtype; for the
#: linear layer x of one or two dimensions, for matmul_backward matrices or stacks of one
#: batch shape) runs end to end in the extension, which hands every other call to
#: :func:`linear_general`, :func:`linear_backward_general` and
#: :func:`matmul_backward_general` (docstrings in the extension).
linear = _matgrad.linear
linear_backward = _matgrad.linear_backward
matmul_backward = _matgrad.matmul_backward


def linear_general(x, weight, bias=None, /, *, weight_layout: str = "in_out", precision=None):
    """:func:`linear` for the calls the extension does not take itself: array-likes, mixed
    dtypes, x of three or more dimensions, unaligned or byte-swapped data, and every error."""
    out_in = weight_is_out_in(weight_layout)
    x = np.asarray(x)
    w = np.asarray(weight)
    b = None if bias is None else np.asarray(bias)
    bf16 = bfloat16_result(x, w, b)
    if bf16 is not None:
        _matgrad.resolve_precision(precision, True)  # (checked, then moot: see _matmul_bfloat16)
        return linear_general(as_float32(x), as_float32(w), as_float32(b), weight_layout=weight_layout,
                              precision="medium").astype(bf16)
    n_in, n_out = linear_dims("linear", x.shape, w.shape, out_in, weight_layout)
    check_bias("linear", None if b is None else b.shape, w.shape, n_out)
    dtype = float_dtype("linear", x, w, b)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    x2 = kernel_ready(x.reshape(rows(x.shape), n_in), dtype)
    y = np.empty((x2.shape[0], n_out), dtype)
    _matgrad.linear_forward(x2, kernel_ready(w, dtype), kernel_ready(b, dtype), out_in, False, y, precision)
    return y.reshape(x.shape[:-1] + (n_out,))


def linear_backward_general(grad_y, x, weight, /, *, weight_layout: str = "in_out",
                            grad_x: bool = True, grad_weight: bool = True, grad_bias: bool = True,
                            precision=None):
    """:func:`linear_backward` for the calls the extension does not take itself (as for
    :func:`linear_general`)."""
    out_in = weight_is_out_in(weight_layout)
    g = np.asarray(grad_y)
    x = np.asarray(x)
    w = np.asarray(weight)
    bf16 = bfloat16_result(g, x, w)
    if bf16 is not None:
        _matgrad.resolve_precision(precision, True)
        return rounded_to(bf16, linear_backward_general(
            as_float32(g), as_float32(x), as_float32(w), weight_layout=weight_layout, grad_x=grad_x,
            grad_weight=grad_weight, grad_bias=grad_bias, precision="medium"))
    n_in, n_out = linear_dims("linear_backward", x.shape, w.shape, out_in, weight_layout)
    check_grad_y("linear_backward", g.shape, x.shape, w.shape, n_out)
    dtype = float_dtype("linear_backward", g, x, w)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    g2 = kernel_ready(g.reshape(rows(g.shape), n_out), dtype)
    x2 = kernel_ready(x.reshape(rows(x.shape), n_in), dtype)
    gx = np.empty(x2.shape, dtype) if grad_x else None
    gw = np.empty(w.shape, dtype) if grad_weight else None
    gb = np.empty(n_out, dtype) if grad_bias else None
    if gx is not None or gw is not None or gb is not None:
        _matgrad.linear_backward_into(g2, x2, kernel_ready(w, dtype), out_in, gx, gw, gb,
                                      precision=precision)
    return (None if gx is None else gx.reshape(x.shape), gw, gb)


def matmul_backward_general(grad_out, a, b, /, *, grad_a: bool = True, grad_b: bool = True,
                            precision=None):
    """:func:`matmul_backward` for the calls the extension does not take itself: array-likes,
    mixed dtypes, 1-D operands, broadcast batches, unaligned or byte-swapped data, and every
    error."""
    a = np.asarray(a)
    b = np.asarray(b)
    g = np.asarray(grad_out)
    bf16 = bfloat16_result(g, a, b)
    if bf16 is not None:
        _matgrad.resolve_precision(precision, True)
        return rounded_to(bf16, matmul_backward_general(as_float32(g), as_float32(a), as_float32(b),
                                                        grad_a=grad_a, grad_b=grad_b, precision="medium"))
    s = matmul_backward_shapes("matmul_backward", g.shape, a.shape, b.shape)
    n, batch = s.n, s.batch
    dtype = float_dtype("matmul_backward", g, a, b)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    g2 = kernel_ready(g.reshape(s.full), dtype)
    a2 = kernel_ready(a.reshape(s.a), dtype)
    b2 = kernel_ready(b.reshape(s.b), dtype)

    ga = gb = None
    if grad_a:
        ga = sum_to_shape(matmul(g2, np.swapaxes(b2, -1, -2), precision=precision), a2.shape).reshape(a.shape)
    if grad_b:
        if b2.ndim == 2 and len(batch):
            # A 2-D b is shared by every batch: Σ_batch A_iᵀ G_i is one GEMM with the batch
            # folded into k (a view when the batch and row dimensions merge).
            gb = matmul(_as_rows(a2, batch).T, g2.reshape(rows(g2.shape), n), precision=precision)
        else:
            gb = sum_to_shape(matmul(np.swapaxes(a2, -1, -2), g2, precision=precision), b2.shape)
        gb = gb.reshape(b.shape)
    return ga, gb


def _as_rows(x: np.ndarray, batch: tuple) -> np.ndarray:
    """``x`` (..., m, k) broadcast to ``batch`` and seen as (batch·m, k): a view when the
    dimensions merge, else one copy (still far smaller than the per-batch gradients)."""
    full = np.broadcast_to(x, batch + x.shape[-2:])
    return full.reshape(rows(full.shape), x.shape[-1])
