"""NumPy's shape rules for the products, in one place for every front end (the CPU functions,
:mod:`matgrad.gpu`, :mod:`matgrad.torch`, :mod:`matgrad.nn`).

Only shapes are looked at here, never data, so the rules apply alike to ndarrays, torch
tensors and GpuArrays; each error names the function and the shapes, as NumPy's do.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

WEIGHT_LAYOUTS = ("in_out", "out_in")


class MatmulShapes(NamedTuple):
    """The shapes of ``a @ b`` under :func:`numpy.matmul`'s rules."""

    #: ``a``'s shape with a 1-D operand seen as a (1, k) row.
    a: tuple
    #: ``b``'s shape with a 1-D operand seen as a (k, 1) column.
    b: tuple
    m: int
    k: int
    n: int
    #: The broadcast batch dimensions.
    batch: tuple
    #: The trailing dimensions of the result: (m, n), without those of 1-D operands.
    core: tuple

    @property
    def result(self) -> tuple:
        """The shape ``np.matmul`` returns."""
        return self.batch + self.core

    @property
    def full(self) -> tuple:
        """The result with the axes of 1-D operands kept: batch + (m, n)."""
        return self.batch + (self.m, self.n)


def matmul_shapes(func: str, a_shape: tuple, b_shape: tuple) -> MatmulShapes:
    """``a @ b``'s shapes; ValueError (NumPy's wording) for 0-d operands, unaligned cores and
    batch dimensions that do not broadcast."""
    a_shape, b_shape = tuple(a_shape), tuple(b_shape)
    shapes = f"{a_shape} and {b_shape}"
    for i, s in enumerate((a_shape, b_shape)):
        if not s:
            raise ValueError(
                f"{func}: input operand {i} does not have enough dimensions "
                f"(has 0, requires at least 1); shapes {shapes}"
            )
    a2 = a_shape if len(a_shape) >= 2 else (1,) + a_shape
    b2 = b_shape if len(b_shape) >= 2 else b_shape + (1,)
    (m, k), (k2, n) = a2[-2:], b2[-2:]
    if k != k2:
        raise ValueError(
            f"{func}: shapes {shapes} are not aligned: {k} (dimension {len(a_shape) - 1} of a) "
            f"!= {k2} (dimension {max(len(b_shape) - 2, 0)} of b)"
        )
    try:
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError:
        raise ValueError(
            f"{func}: the batch dimensions of shapes {shapes} cannot be broadcast together"
        ) from None
    core = ((m,) if len(a_shape) >= 2 else ()) + ((n,) if len(b_shape) >= 2 else ())
    return MatmulShapes(a2, b2, m, k, n, batch, core)


def matmul_backward_shapes(func: str, g_shape: tuple, a_shape: tuple, b_shape: tuple) -> MatmulShapes:
    """:func:`matmul_shapes`, and ``grad_out`` checked to have the result's shape."""
    s = matmul_shapes(func, a_shape, b_shape)
    if tuple(g_shape) != s.result:
        raise ValueError(
            f"{func}: grad_out has shape {tuple(g_shape)}, but operands {tuple(a_shape)} and "
            f"{tuple(b_shape)} give a result of shape {s.result}"
        )
    return s


def check_out_shape(out_shape: tuple, s: MatmulShapes, shapes: str) -> tuple:
    """Checks an ``out=`` shape as NumPy's matmul does; returns the batch shape it implies (its
    leading dimensions may broadcast the operands further)."""
    out_shape = tuple(out_shape)
    nd = len(s.core)
    out_batch = out_shape[: len(out_shape) - nd]
    if len(out_shape) < nd or out_shape[len(out_shape) - nd :] != s.core:
        raise ValueError(
            f"matmul: out has shape {out_shape}, but operands {shapes} give shape {s.result}"
        )
    try:
        fits = np.broadcast_shapes(s.batch, out_batch) == out_batch
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"matmul: non-broadcastable output operand with shape {out_shape} doesn't match "
            f"the broadcast shape {s.result} of operands {shapes}"
        )
    return out_batch


def weight_is_out_in(weight_layout: str) -> bool:
    """Whether ``weight_layout`` is torch's (out, in); ValueError unless it is one of the two."""
    if weight_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"weight_layout must be 'in_out' or 'out_in', got {weight_layout!r}")
    return weight_layout == "out_in"


def linear_dims(func: str, x_shape: tuple, w_shape: tuple, out_in: bool, layout: str) -> tuple:
    """(in, out) of a linear layer whose input has shape (..., in) and weight ``w_shape``."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    if len(w_shape) != 2:
        raise ValueError(f"{func}: weight must be 2-D, got shape {w_shape}")
    n_out, n_in = w_shape if out_in else w_shape[::-1]
    if not x_shape or x_shape[-1] != n_in:
        raise ValueError(
            f"{func}: x of shape {x_shape} does not fit a weight of shape {w_shape} "
            f"(weight_layout={layout!r} means in={n_in}, out={n_out})"
        )
    return n_in, n_out


def check_bias(func: str, b_shape: tuple | None, w_shape: tuple, n_out: int) -> None:
    if b_shape is not None and tuple(b_shape) != (n_out,):
        raise ValueError(
            f"{func}: bias of shape {tuple(b_shape)} does not fit a weight of shape "
            f"{tuple(w_shape)} (expected ({n_out},))"
        )


def check_grad_y(func: str, g_shape: tuple, x_shape: tuple, w_shape: tuple, n_out: int) -> None:
    y_shape = tuple(x_shape)[:-1] + (n_out,)
    if tuple(g_shape) != y_shape:
        raise ValueError(
            f"{func}: grad_y has shape {tuple(g_shape)}, but x of shape {tuple(x_shape)} and "
            f"weight of shape {tuple(w_shape)} give y of shape {y_shape}"
        )
