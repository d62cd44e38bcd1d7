"""Small neural networks built on matgrad's linear layer, forward and backward.

:func:`mlp2_loss_and_grads` is the two-layer ReLU network with a softmax cross-entropy loss
and an L2 penalty, with every product computed by matgrad's GEMM::

    Z1 = X W1 + b1,   H1 = relu(Z1),   Z2 = H1 W2 + b2,   P = softmax(Z2)
    L  = -mean_i log P[i, y_i] + reg * (ΣW1² + ΣW2²)

and its gradients, the classic derivation::

    ∂L/∂Z2 = (P - Y) / N                     (Y the one-hot labels)
    ∂L/∂W2 = H1ᵀ ∂L/∂Z2 + 2 reg W2           ∂L/∂b2 = column sums of ∂L/∂Z2
    ∂L/∂H1 = ∂L/∂Z2 W2ᵀ
    ∂L/∂Z1 = ∂L/∂H1 ⊙ relu′(Z1)              relu′(Z1) = (H1 > 0)
    ∂L/∂W1 = Xᵀ ∂L/∂Z1 + 2 reg W1            ∂L/∂b1 = column sums of ∂L/∂Z1

The ReLU is the fused epilogue of the first layer's GEMM (H1 comes out of it directly; Z1
is never stored), its derivative masks ∂L/∂H1 as the GEMM that computes it stores each tile
(∂L/∂Z1 comes out directly; ∂L/∂H1 is never stored), and each bias gradient is summed while
its GEMM packs ∂L/∂Z.
"""

from __future__ import annotations

import numpy as np

from . import _matgrad
from ._arrays import F32, F64, kernel_ready

__all__ = ["mlp2_loss_and_grads", "init_mlp2_params"]

_KEYS = ("W1", "b1", "W2", "b2")


def _check_inputs(params, X):
    """The four parameters and X as float arrays of one dtype, shapes checked; (N, D, H, C)."""
    if not hasattr(params, "__getitem__") or not hasattr(params, "keys"):
        raise TypeError(f"params must be a dict with keys W1, b1, W2, b2, got "
                        f"{type(params).__name__}")
    missing = [k for k in _KEYS if k not in params]
    if missing:
        raise ValueError(f"params is missing {', '.join(map(repr, missing))} "
                         f"(expected keys W1, b1, W2, b2)")
    W1, b1, W2, b2 = (np.asarray(params[k]) for k in _KEYS)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (N, D), got shape {X.shape}")
    if W1.ndim != 2:
        raise ValueError(f"W1 must be 2-D (D, H), got shape {W1.shape}")
    if W2.ndim != 2:
        raise ValueError(f"W2 must be 2-D (H, C), got shape {W2.shape}")
    n, d = X.shape
    if W1.shape[0] != d:
        raise ValueError(f"X of shape {X.shape} does not fit W1 of shape {W1.shape}: "
                         f"X has D={d} features, W1 has {W1.shape[0]} rows")
    h = W1.shape[1]
    if W2.shape[0] != h:
        raise ValueError(f"W1 of shape {W1.shape} does not fit W2 of shape {W2.shape}: "
                         f"W1 has H={h} columns, W2 has {W2.shape[0]} rows")
    c = W2.shape[1]
    if b1.shape != (h,):
        raise ValueError(f"b1 must have shape ({h},) to fit W1 of shape {W1.shape}, "
                         f"got {b1.shape}")
    if b2.shape != (c,):
        raise ValueError(f"b2 must have shape ({c},) to fit W2 of shape {W2.shape}, "
                         f"got {b2.shape}")
    dtype = np.result_type(X, W1, b1, W2, b2)
    if dtype != F32 and dtype != F64:
        names = ", ".join(f"{k}={a.dtype}" for k, a in zip(("X",) + _KEYS, (X, W1, b1, W2, b2)))
        raise TypeError(f"mlp2_loss_and_grads: float32 or float64 arrays required, got {names}")
    arrays = tuple(kernel_ready(a, dtype) for a in (X, W1, b1, W2, b2))
    return arrays, (n, d, h, c), dtype


def _check_labels(y, n: int, c: int) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels y must be integers (class indices), got dtype {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"labels y must have shape ({n},), one per row of X, got {y.shape}")
    if n == 0:
        raise ValueError("X has no rows: the mean loss of an empty batch is undefined")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise ValueError(f"labels y must be >= 0, got a negative label {lo}")
    if hi >= c:
        raise ValueError(f"labels y must be < C={c} (the number of classes, W2.shape[1]), "
                         f"got label {hi}")
    return y.astype(np.intp, copy=False)


def mlp2_loss_and_grads(params, X, y=None, reg: float = 0.0, *, precision=None):
    """Loss and gradients of the two-layer ReLU network with softmax cross-entropy.

    ``params``: a dict with ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,).
    ``X``: (N, D). ``y``: integer class labels (N,) in ``[0, C)``, or ``None``.
    ``reg``: the L2 strength; the penalty is ``reg * (ΣW1² + ΣW2²)`` (biases excluded).

    Without ``y``, returns the scores Z2 (N, C). With ``y``, returns ``(loss, grads)``: the
    mean softmax cross-entropy plus the penalty as a Python float, and a dict of the
    gradients with the keys and shapes of ``params``. Arrays are float32 or float64 (the
    result dtype of the inputs); bad shapes, keys or labels raise ValueError. ``precision``
    is how its float32 products are computed, as for :func:`matgrad.matmul`.
    """
    (X, W1, b1, W2, b2), (n, _d, h, c), dtype = _check_inputs(params, X)
    precision = _matgrad.resolve_precision(precision, dtype == F32)
    labels = None if y is None else _check_labels(y, n, c)
    reg = float(reg)
    if not np.isfinite(reg) or reg < 0:
        raise ValueError(f"reg must be a finite number >= 0, got {reg}")

    if labels is None:
        # Forward only. H1 = relu(X W1 + b1) in one GEMM: bias and ReLU are applied as each
        # tile of the product is stored, so Z1 never exists.
        H1 = np.empty((n, h), dtype)
        _matgrad.linear_forward(X, W1, b1, False, True, H1, precision)
        scores = np.empty((n, c), dtype)
        _matgrad.linear_forward(H1, W2, b2, False, False, scores, precision)
        return scores

    # The step runs in the core in one call (matgrad_core::mlp): the four GEMMs with their
    # fused epilogues (bias and ReLU as H1 is stored, the ReLU mask as dZ1 = dZ2 W2ᵀ ⊙ (H1 > 0)
    # is stored, db1 and db2 summed while dZ1 and dZ2 are packed) and the softmax between
    # them, with no Python in between: each big GEMM leaves the caches cold for the
    # interpreter (docs/measurements.md, "The MLP step in one call").
    # The L2 term's gradient 2λW is written first and the GEMMs add to it (beta = 1): no
    # temporary of W's size and no second pass over dW.
    dW1 = _weight_decay_grad(W1, reg)
    dW2 = _weight_decay_grad(W2, reg)
    db1 = np.empty(h, dtype)
    db2 = np.empty(c, dtype)
    loss = _matgrad.mlp2_loss_and_grads(X, W1, b1, W2, b2, np.ascontiguousarray(labels),
                                        dW1, db1, dW2, db2, bool(reg), precision)
    if reg:
        loss += _l2_penalty(W1, W2, reg)
    return loss, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _l2_penalty(W1: np.ndarray, W2: np.ndarray, reg: float) -> float:
    """reg·(ΣW1² + ΣW2²), each ΣW² a dot product: one pass, no temporary of W's size."""
    return reg * float(np.vdot(W1.ravel(), W1.ravel()) + np.vdot(W2.ravel(), W2.ravel()))


def _weight_decay_grad(w: np.ndarray, reg: float) -> np.ndarray:
    """A new array holding 2·reg·w, the L2 penalty's gradient (uninitialised when reg is 0:
    the GEMM then overwrites it instead of adding to it)."""
    if not reg:
        return np.empty(w.shape, w.dtype)
    return np.multiply(w, w.dtype.type(2.0 * reg))


def init_mlp2_params(d: int, h: int, c: int, *, dtype=np.float32, seed=0) -> dict:
    """He-initialised parameters for :func:`mlp2_loss_and_grads`: W1 ~ N(0, 2/D),
    W2 ~ N(0, 1/H), zero biases."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    return {
        "W1": (rng.standard_normal((d, h)) * np.sqrt(2.0 / d)).astype(dtype),
        "b1": np.zeros(h, dtype),
        "W2": (rng.standard_normal((h, c)) * np.sqrt(1.0 / h)).astype(dtype),
        "b2": np.zeros(c, dtype),
    }
