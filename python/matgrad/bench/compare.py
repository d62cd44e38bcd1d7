"""Judging a result against its reference, for the bench's cases and the self-check."""

from __future__ import annotations

from typing import Any

import numpy as np

from .reference import mlp2_numpy

#: Relative tolerance per dtype. The absolute tolerance is this times the RMS of the
#: reference, so that entries close to zero in a long dot product are judged against the
#: size of the accumulated terms, not their own.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def close_enough(res: Any, ref: np.ndarray) -> tuple[bool, str]:
    """Whether ``res`` matches ``ref`` in shape, dtype and value (within :data:`RTOL`);
    returns ``(ok, detail)``."""
    ref = np.asarray(ref)
    if not isinstance(res, np.ndarray):
        if np.isscalar(res) and ref.ndim == 0:
            res = np.asarray(res)
        else:
            return False, f"result is {type(res).__name__}, not ndarray"
    if res.shape != ref.shape:
        return False, f"shape {res.shape} != expected {ref.shape}"
    if res.dtype != ref.dtype:
        return False, f"dtype {res.dtype} != expected {ref.dtype}"
    if ref.dtype.kind in "iub":
        ok = bool(np.array_equal(res, ref))
        return ok, "exact" if ok else "integer result differs"
    if ref.size == 0:
        return True, "empty"
    if not np.all(np.isfinite(res)):
        return False, "result has non-finite values"
    rtol = RTOL.get(ref.dtype, 1e-4)
    r64 = ref.astype(np.float64, copy=False)
    scale = float(np.sqrt(np.mean(np.square(r64))))
    atol = rtol * max(scale, 1e-30)
    err = float(np.max(np.abs(res.astype(np.float64) - r64)))
    ok = bool(np.allclose(res, ref, rtol=rtol, atol=atol))
    rel = err / scale if scale > 0 else err
    return ok, f"max|err|={err:.3g} (={rel:.2g} x rms, rtol={rtol:g})"


def close_to_bf16(res, a, b, precision: str) -> tuple[bool, str]:
    """A float32 product at ``precision`` against the float64 product: within 2⁻⁷ (one
    bfloat16 rounding of each operand, "medium") or 2⁻¹⁴ ("high") of Σ|a||b|, relative to
    its RMS."""
    ref = np.matmul(a.astype(np.float64), b.astype(np.float64))
    mag = float(np.sqrt(np.mean(np.square(np.matmul(np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64)))))))
    if res.shape != ref.shape or res.dtype != np.float32:
        return False, f"shape/dtype {res.shape} {res.dtype}, want {ref.shape} float32"
    err = float(np.max(np.abs(res.astype(np.float64) - ref))) / max(mag, 1e-30)
    limit = 2.0**-7 if precision == "medium" else 2.0**-14 + 1e-5
    return err <= limit, f"max|err|/rms(|A||B|) = {err:.2g} (limit {limit:.2g})"


def check_grads(got, want, names) -> tuple[bool, str]:
    """:func:`close_enough` for each gradient of a tuple; ``None`` where one is not wanted."""
    if not isinstance(got, (tuple, list)) or len(got) != len(want):
        return False, f"expected a {len(want)}-tuple, got {type(got).__name__}"
    details, ok_all = [], True
    for name, g, w in zip(names, got, want):
        if w is None:
            if g is not None:
                ok_all = False
                details.append(f"{name}: expected None")
            continue
        ok, detail = close_enough(g, w)
        ok_all &= ok
        details.append(f"{name}: {detail}")
    return ok_all, "; ".join(details)


def check_mlp2(res, params, X, y, reg) -> tuple[bool, str]:
    """``(loss, grads)`` of an MLP step against :func:`mlp2_numpy`, with the L2 penalty
    ``reg * (ΣW1² + ΣW2²)`` that :func:`matgrad.nn.mlp2_loss_and_grads` documents."""
    if not isinstance(res, (tuple, list)) or len(res) != 2:
        return False, "expected (loss, grads)"
    loss, grads = res
    want_loss, want = mlp2_numpy({k: v.copy() for k, v in params.items()}, X, y, reg)
    ok = bool(np.isclose(float(loss), want_loss, rtol=1e-4, atol=1e-6))
    details = [f"loss {float(loss):.6g} vs {want_loss:.6g}"]
    for k in ("W1", "b1", "W2", "b2"):
        if not isinstance(grads, dict) or k not in grads:
            return False, f"grads has no {k!r}"
        o, d = close_enough(np.asarray(grads[k]), want[k])
        ok &= o
        details.append(f"d{k}: {d}")
    return ok, "; ".join(details)
