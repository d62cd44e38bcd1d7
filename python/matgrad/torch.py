"""matgrad's kernels inside torch autograd, on CPU tensors, without copies.

- :func:`linear` (torch's layout, like ``torch.nn.functional.linear``) and :func:`matmul`: the
  forward and the backward on matgrad's GEMM, the backward computing only the gradients
  autograd asks for. Eagerly they are ``torch.autograd.Function``s (the classic form outside
  torch.func transforms, and none at all where nothing is differentiated: ``torch.no_grad``,
  ``inference_mode``, frozen weights); under ``torch.compile`` and
  ``torch.export`` the registered operators ``torch.ops.matgrad.linear`` and ``.matmul``
  (``torch.library`` custom ops with fake implementations, and ``.linear_backward`` /
  ``.matmul_backward`` as their registered gradients), one graph node each. Both run the same
  functions below.
- ``torch.func`` transforms (grad, vmap, jvp, jacrev, jacfwd, hessian) work over both: the
  forward on matgrad, the backward and tangents under a transform on torch's ops.
- :class:`Linear` is a drop-in for ``torch.nn.Linear``: the same parameters, initialization and
  ``state_dict``, with matgrad's forward and backward.

Tensors are shared with NumPy (``Tensor.numpy()`` / ``torch.from_numpy``), never copied.
Importing this module needs torch; ``import matgrad`` does not. Where torch computes on OpenMP
(its CPU wheels do), importing it moves matgrad's threads onto torch's OpenMP team
(``matgrad.set_thread_pool("openmp")``): torch's threads spin for milliseconds after each of
its operators, and matgrad's own would share the cores with them. ``MATGRAD_THREAD_POOL=matgrad``
keeps matgrad's own threads.
"""

from __future__ import annotations

import os

import torch
import torch.autograd.forward_ad as _forward_ad

from . import set_thread_pool as _set_thread_pool

from ._grad import linear as _np_linear
from ._grad import linear_backward as _np_linear_backward
from ._grad import matmul_backward as _np_matmul_backward
from ._matmul import matmul as _np_matmul

__all__ = ["linear", "matmul", "Linear"]


def _share_torch_threads() -> None:
    """matgrad's threads on torch's OpenMP team, unless ``MATGRAD_THREAD_POOL`` says
    otherwise (``matgrad``; ``openmp`` insists: an error if it cannot be had)."""
    wanted = os.environ.get("MATGRAD_THREAD_POOL")
    if wanted not in (None, "matgrad", "openmp"):
        raise ValueError(f"MATGRAD_THREAD_POOL must be 'matgrad' or 'openmp', got {wanted!r}")
    if wanted == "matgrad":
        return _set_thread_pool("matgrad")
    if wanted is None and "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    # torch's own copy (torch/lib on x86-64 wheels, torch.libs on others), else any.
    here = os.path.dirname(torch.__file__)
    for library in (here + os.sep, here + ".libs" + os.sep, None):
        try:
            return _set_thread_pool("openmp", library)
        except RuntimeError:
            if library is None and wanted == "openmp":
                raise
    return None


_share_torch_threads()

_DTYPES = (torch.float32, torch.float64)


def _numpy(t: torch.Tensor | None, func: str, name: str):
    if t is None:
        return None
    if not t.is_cpu:
        raise ValueError(f"matgrad.torch.{func}: {name} is on {t.device}; matgrad computes on CPU tensors")
    if t.dtype not in _DTYPES:
        raise TypeError(f"matgrad.torch.{func}: {name} has dtype {t.dtype}; float32 or float64 required")
    # (detach() only where needed: it is half the cost of a small call's conversions.)
    return (t.detach() if t.requires_grad else t).numpy()


def _tensor(a):
    return None if a is None else torch.from_numpy(a)


# --- the operators (torch.library): one node each for torch.compile and torch.export, with
# fake implementations for shape inference and their autograd formulas registered.

def _empty(like: torch.Tensor) -> torch.Tensor:
    # What an operator returns for a gradient not asked for (custom ops return no None).
    return like.new_empty((0,))


def _linear_forward(input, weight, bias, precision):
    y = _np_linear(_numpy(input, "linear", "input"), _numpy(weight, "linear", "weight"),
                   _numpy(bias, "linear", "bias"), weight_layout="out_in", precision=precision)
    return torch.from_numpy(y)


def _linear_backward(grad_y, input, weight, wanted, precision):
    """(grad_x, grad_weight, grad_bias), None for those not wanted."""
    gx, gw, gb = _np_linear_backward(
        _numpy(grad_y, "linear", "grad_output"), _numpy(input, "linear", "input"),
        _numpy(weight, "linear", "weight"), weight_layout="out_in",
        grad_x=wanted[0], grad_weight=wanted[1], grad_bias=wanted[2], precision=precision)
    return tuple(None if g is None else torch.from_numpy(g) for g in (gx, gw, gb))


def _matmul_forward(a, b, precision):
    return torch.as_tensor(_np_matmul(_numpy(a, "matmul", "a"), _numpy(b, "matmul", "b"), precision=precision))


def _matmul_backward(grad_c, a, b, wanted, precision):
    """(grad_a, grad_b), None for those not wanted."""
    ga, gb = _np_matmul_backward(
        _numpy(grad_c, "matmul", "grad_output"), _numpy(a, "matmul", "a"), _numpy(b, "matmul", "b"),
        grad_a=wanted[0], grad_b=wanted[1], precision=precision)
    return tuple(None if g is None else torch.from_numpy(g) for g in (ga, gb))


# --- eager: autograd.Functions. A call through a registered operator's dispatch costs ~10 µs
# more (Zen 4, 2026-12-07: an 8x16 @ 16x16 linear 14.4 against 5.5 µs, its backward 19.9
# against 7.5; at 256x784 @ 784x256 within the noise; ~150 µs in an earlier measurement on
# the Xeon, docs/measurements.md).
#
# torch.func: the forward runs on plain tensors (matgrad's kernels); under a transform the
# backward receives torch.func's wrapped tensors, which have no data for NumPy, and computes
# with torch's own ops (differentiable again, so grad of grad works too). The vmap rules batch
# onto matgrad where the batch reads as leading dimensions of one operand, else torch's rule.

def _wrapped(*tensors) -> bool:
    return any(t is not None and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(x, weight, bias, precision):
        return _linear_forward(x, weight, bias, precision)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, precision = inputs
        ctx.precision = precision
        ctx.save_for_backward(x, weight, bias)
        ctx.save_for_forward(x, weight)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        need_b = need_b and bias is not None
        if _wrapped(grad_y, x, weight):
            return (grad_y @ weight if need_x else None, _rows(grad_y).T @ _rows(x) if need_w else None,
                    _rows(grad_y).sum(0) if need_b else None, None)
        return (*_linear_backward(grad_y, x, weight, [need_x, need_w, need_b], ctx.precision), None)

    @staticmethod
    def jvp(ctx, dx, dweight, dbias, _):
        # Forward mode (torch.func.jvp, jacfwd, hessian) on torch's ops: dy = dx Wᵀ + x dWᵀ + db.
        x, weight = ctx.saved_tensors
        terms = [t for t in (dx @ weight.T if dx is not None else None,
                             x @ dweight.T if dweight is not None else None, dbias) if t is not None]
        return sum(terms[1:], terms[0])

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, precision):
        x_dim, w_dim, b_dim, _ = in_dims
        if x_dim is not None and w_dim is None and b_dim is None:
            # One weight for the whole batch: the batch is more rows of x.
            return _LinearFunction.apply(x.movedim(x_dim, 0), weight, bias, precision), 0
        return torch.vmap(torch.nn.functional.linear, in_dims=(x_dim, w_dim, b_dim))(x, weight, bias), 0


class _MatmulFunction(torch.autograd.Function):
    @staticmethod
    def forward(a, b, precision):
        return _matmul_forward(a, b, precision)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, b, precision = inputs
        ctx.precision = precision
        ctx.save_for_backward(a, b)
        ctx.save_for_forward(a, b)

    @staticmethod
    def jvp(ctx, da, db, _):
        a, b = ctx.saved_tensors
        terms = [t for t in (torch.matmul(da, b) if da is not None else None,
                             torch.matmul(a, db) if db is not None else None) if t is not None]
        return sum(terms[1:], terms[0])

    @staticmethod
    def backward(ctx, grad_c):
        a, b = ctx.saved_tensors
        need_a, need_b, _ = ctx.needs_input_grad
        if _wrapped(grad_c, a, b):
            # torch.matmul's own backward, broadcasting and 1-D operands included.
            ga, gb = torch.func.vjp(torch.matmul, a, b)[1](grad_c)
            return (ga if need_a else None, gb if need_b else None, None)
        return (*_matmul_backward(grad_c, a, b, [need_a, need_b], ctx.precision), None)

    @staticmethod
    def vmap(info, in_dims, a, b, precision):
        a_dim, b_dim, _ = in_dims
        if a_dim is not None and b_dim is None and b.ndim <= 2:
            # The batch as leading dimensions of a: np.matmul's broadcasting gives each its product.
            return _MatmulFunction.apply(a.movedim(a_dim, 0), b, precision), 0
        return torch.vmap(torch.matmul, in_dims=(a_dim, b_dim))(a, b), 0


def _eager_twin(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """``function`` in the classic form (a forward that takes ctx), for calls outside any
    torch.func transform: ``Function.apply`` binds a setup_context form's arguments with
    ``inspect.signature`` on every call (~25 µs here: an 8×16 @ 16×16 linear's Function costs 37
    µs that way against 12), and only torch.func needs that form. The same forward, context,
    backward and jvp, so the same bits."""

    def forward(ctx, *inputs):
        output = function.forward(*inputs)
        function.setup_context(ctx, inputs, output)
        return output

    # (Named as it is created: autograd names the graph node "<name>Backward" then.)
    return type(function.__name__ + "Eager", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(function.backward),
        "jvp": staticmethod(function.jvp), "__module__": __name__})


_LinearFunctionEager = _eager_twin(_LinearFunction)
_MatmulFunctionEager = _eager_twin(_MatmulFunction)
# (A torch without this test: always the setup_context form.)
_transforms_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


# --- compiled and exported: the same computations as registered operators.

@torch.library.custom_op("matgrad::linear", mutates_args=())
def _linear_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               precision: str | None) -> torch.Tensor:
    return _linear_forward(input, weight, bias, precision)


@_linear_op.register_fake
def _(input, weight, bias, precision):
    return input.new_empty(input.shape[:-1] + (weight.shape[0],))


@torch.library.custom_op("matgrad::linear_backward", mutates_args=())
def _linear_backward_op(grad_y: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                        wanted: list[bool], precision: str | None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _linear_backward(grad_y, input, weight, wanted, precision)
    return tuple(_empty(grad_y) if g is None else g for g in grads)


@_linear_backward_op.register_fake
def _(grad_y, input, weight, wanted, precision):
    shapes = (input.shape, weight.shape, (weight.shape[0],))
    return tuple(grad_y.new_empty(s) if w else _empty(grad_y) for w, s in zip(wanted, shapes))


def _linear_setup(ctx, inputs, output):
    input, weight, bias, precision = inputs
    ctx.save_for_backward(input, weight)
    ctx.has_bias = bias is not None
    ctx.precision = precision


def _linear_grad(ctx, grad_y):
    input, weight = ctx.saved_tensors
    need_x, need_w, need_b, _ = ctx.needs_input_grad
    wanted = [need_x, need_w, need_b and ctx.has_bias]
    gx, gw, gb = _linear_backward_op(grad_y, input, weight, wanted, ctx.precision)
    return (gx if wanted[0] else None, gw if wanted[1] else None, gb if wanted[2] else None, None)


_linear_op.register_autograd(_linear_grad, setup_context=_linear_setup)


@torch.library.custom_op("matgrad::matmul", mutates_args=())
def _matmul_op(a: torch.Tensor, b: torch.Tensor, precision: str | None) -> torch.Tensor:
    return _matmul_forward(a, b, precision)


@_matmul_op.register_fake
def _(a, b, precision):
    return torch.empty_like(torch.matmul(a, b))


@torch.library.custom_op("matgrad::matmul_backward", mutates_args=())
def _matmul_backward_op(grad_c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, wanted: list[bool],
                        precision: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(_empty(grad_c) if g is None else g for g in _matmul_backward(grad_c, a, b, wanted, precision))


@_matmul_backward_op.register_fake
def _(grad_c, a, b, wanted, precision):
    return tuple(x.new_empty(x.shape) if w else _empty(grad_c) for w, x in zip(wanted, (a, b)))


def _matmul_setup(ctx, inputs, output):
    a, b, precision = inputs
    ctx.save_for_backward(a, b)
    ctx.precision = precision


def _matmul_grad(ctx, grad_c):
    a, b = ctx.saved_tensors
    need_a, need_b, _ = ctx.needs_input_grad
    ga, gb = _matmul_backward_op(grad_c, a, b, [need_a, need_b], ctx.precision)
    return (ga if need_a else None, gb if need_b else None, None)


_matmul_op.register_autograd(_matmul_grad, setup_context=_matmul_setup)


def _tracing() -> bool:
    """Whether torch.compile or torch.export is tracing this call (then the operator, one node
    of the graph; else the cheaper eager autograd.Function)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def _differentiated(*tensors) -> bool:
    """Whether autograd may need this call's formulas: reverse mode records it (grad mode on
    and an input requires grad), forward mode may carry tangents (a ``forward_ad.dual_level``
    is open), or a ``torch.func`` transform wraps an input. Otherwise (``torch.no_grad``,
    ``inference_mode``, frozen weights) the forward runs without the autograd.Function, whose
    own cost is ~35 µs a call here (an 8×16 @ 16×16 linear: 51 against 16 µs)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return True
    # (A torch without the private level: always the Function.)
    return getattr(_forward_ad, "_current_level", 0) >= 0 or _wrapped(*tensors)


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           precision: str | None = None) -> torch.Tensor:
    """``input @ weight.T + bias`` like ``torch.nn.functional.linear``, weight of shape
    (out, in), forward and backward on matgrad's kernels (``precision`` as for
    :func:`matgrad.matmul`)."""
    if _tracing():
        return _linear_op(input, weight, bias, precision)
    if not _differentiated(input, weight, bias):
        return _linear_forward(input, weight, bias, precision)
    function = _LinearFunction if _transforms_active() else _LinearFunctionEager
    return function.apply(input, weight, bias, precision)


def matmul(a: torch.Tensor, b: torch.Tensor, *, precision: str | None = None) -> torch.Tensor:
    """``torch.matmul(a, b)``, forward and backward on matgrad's kernels."""
    if _tracing():
        return _matmul_op(a, b, precision)
    if not _differentiated(a, b):
        return _matmul_forward(a, b, precision)
    function = _MatmulFunction if _transforms_active() else _MatmulFunctionEager
    return function.apply(a, b, precision)


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
