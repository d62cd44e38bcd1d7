"""matgrad's kernels inside torch autograd, on CPU tensors, without copies.

- :func:`linear` (torch's layout, like ``torch.nn.functional.linear``) and :func:`matmul` are
  ``torch.autograd.Function``s: the forward and the backward run on matgrad's GEMM, the
  backward computes only the gradients autograd asks for (``ctx.needs_input_grad``).
- :class:`Linear` is a drop-in for ``torch.nn.Linear``: the same parameters, initialization and
  ``state_dict``, with matgrad's forward and backward.

Tensors are shared with NumPy (``Tensor.numpy()`` / ``torch.from_numpy``), never copied.
Importing this module needs torch; ``import matgrad`` does not.
"""

from __future__ import annotations

import torch

from ._grad import linear as _np_linear
from ._grad import linear_backward as _np_linear_backward
from ._grad import matmul_backward as _np_matmul_backward
from ._matmul import matmul as _np_matmul

__all__ = ["linear", "matmul", "Linear"]

_DTYPES = (torch.float32, torch.float64)


def _numpy(t: torch.Tensor | None, func: str, name: str):
    if t is None:
        return None
    if t.device.type != "cpu":
        raise ValueError(f"matgrad.torch.{func}: {name} is on {t.device}; matgrad computes on CPU tensors")
    if t.dtype not in _DTYPES:
        raise TypeError(f"matgrad.torch.{func}: {name} has dtype {t.dtype}; float32 or float64 required")
    return t.detach().numpy()


def _tensor(a):
    return None if a is None else torch.from_numpy(a)


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, precision):
        y = _np_linear(
            _numpy(x, "linear", "input"),
            _numpy(weight, "linear", "weight"),
            _numpy(bias, "linear", "bias"),
            weight_layout="out_in",
            precision=precision,
        )
        ctx.precision = precision
        ctx.save_for_backward(x, weight, bias)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        gx, gw, gb = _np_linear_backward(
            _numpy(grad_y, "linear", "grad_output"),
            _numpy(x, "linear", "input"),
            _numpy(weight, "linear", "weight"),
            weight_layout="out_in",
            grad_x=need_x,
            grad_weight=need_w,
            grad_bias=need_b and bias is not None,
            precision=ctx.precision,
        )
        return _tensor(gx), _tensor(gw), _tensor(gb), None


class _MatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, precision):
        c = _np_matmul(_numpy(a, "matmul", "a"), _numpy(b, "matmul", "b"), precision=precision)
        ctx.precision = precision
        ctx.save_for_backward(a, b)
        return torch.as_tensor(c)

    @staticmethod
    def backward(ctx, grad_c):
        a, b = ctx.saved_tensors
        need_a, need_b, _ = ctx.needs_input_grad
        ga, gb = _np_matmul_backward(
            _numpy(grad_c, "matmul", "grad_output"),
            _numpy(a, "matmul", "a"),
            _numpy(b, "matmul", "b"),
            grad_a=need_a,
            grad_b=need_b,
            precision=ctx.precision,
        )
        return _tensor(ga), _tensor(gb), None


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           precision: str | None = None) -> torch.Tensor:
    """``input @ weight.T + bias`` like ``torch.nn.functional.linear``, weight of shape
    (out, in), forward and backward on matgrad's kernels (``precision`` as for
    :func:`matgrad.matmul`)."""
    return _LinearFunction.apply(input, weight, bias, precision)


def matmul(a: torch.Tensor, b: torch.Tensor, *, precision: str | None = None) -> torch.Tensor:
    """``torch.matmul(a, b)``, forward and backward on matgrad's kernels."""
    return _MatmulFunction.apply(a, b, precision)


class Linear(torch.nn.Linear):
    """A drop-in for ``torch.nn.Linear`` computing with matgrad.

    Same constructor, parameters, initialization and ``state_dict`` (the two load each other's
    state), and a keyword ``precision`` (as for :func:`matgrad.matmul`). Inputs that matgrad
    does not compute (non-CPU tensors, dtypes other than float32 and float64) fall back to
    ``torch.nn.functional.linear``.
    """

    def __init__(self, *args, precision: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.device.type != "cpu" or input.dtype not in _DTYPES or self.weight.dtype != input.dtype:
            return torch.nn.functional.linear(input, self.weight, self.bias)
        return linear(input, self.weight, self.bias, precision=self.precision)
