"""The operations the bench and the asv suites time, each as a dict of implementations —
matgrad's (from the namespace under test: ``matgrad`` or ``matgrad.gpu``), NumPy's and, when
torch is given, torch's — over the same inputs, and the inputs themselves.

One catalogue for both: ``benchmarks/`` builds its suites from these functions.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .outcomes import Skip

Impls = dict[str, Callable[[], Any]]


def need(ns: Any, name: str) -> Callable:
    """``ns.<name>``, or :class:`Skip` when the namespace under test has no such function."""
    f = getattr(ns, name, None)
    if f is None:
        raise Skip(f"{getattr(ns, '__name__', ns)}.{name} is not available in this build")
    return f


def randn(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ------------------------------------------------------------------------------- matmul


def torch_bf16(torch, fn: Callable) -> Callable:
    """``fn`` with torch's float32 matmuls in bfloat16 (``torch.backends.mkldnn.matmul.
    fp32_precision = "bf16"``, its AMX path where the CPU has one), the setting restored."""
    flags = torch.backends.mkldnn.matmul

    def call():
        before = flags.fp32_precision
        flags.fp32_precision = "bf16"
        try:
            return fn()
        finally:
            flags.fp32_precision = before

    return call


def matmul_impls(ns, torch, a: np.ndarray, b: np.ndarray, precision: str | None = None) -> Impls:
    """``a @ b``; with ``precision`` ("high"/"medium"), matgrad at it against NumPy's float32
    and torch's float32 in bfloat16."""
    mm = need(ns, "matmul")
    if precision is None:
        impls = {"matgrad": lambda: mm(a, b), "numpy": lambda: np.matmul(a, b)}
    else:
        impls = {"matgrad": lambda: mm(a, b, precision=precision), "numpy": lambda: np.matmul(a, b)}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        impls["torch"] = (lambda: torch.matmul(ta, tb)) if precision is None else torch_bf16(torch, lambda: torch.matmul(ta, tb))
    return impls


def torch_grad_fn(torch, make_out: Callable, leaves, grad_out: np.ndarray) -> Callable:
    """torch's backward alone: the graph is built once and ``autograd.grad`` reruns it."""
    leaves = [torch.from_numpy(v.copy()).requires_grad_(True) for v in leaves]
    out = make_out(*leaves)
    g = torch.from_numpy(grad_out)
    return lambda: torch.autograd.grad(out, leaves, g, retain_graph=True)


def matmul_backward_numpy(g, a, b):
    return g @ b.T, a.T @ g


def matmul_backward_impls(ns, torch, a, b, g) -> Impls:
    mb = need(ns, "matmul_backward")
    impls = {"matgrad": lambda: mb(g, a, b), "numpy": lambda: matmul_backward_numpy(g, a, b)}
    if torch is not None:
        impls["torch"] = torch_grad_fn(torch, torch.matmul, (a, b), g)
    return impls


# ------------------------------------------------------------------------------- linear


def linear_inputs(shape: tuple, layout: str, dtype=np.float32, seed: int = 1) -> tuple:
    """x (batch, in), the weight in ``layout``, the bias and a grad_y (batch, out)."""
    bsz, n_in, n_out = shape
    rng = np.random.default_rng(seed)
    x = randn(rng, (bsz, n_in), dtype)
    w = randn(rng, (n_out, n_in) if layout == "out_in" else (n_in, n_out), dtype,
              1.0 / math.sqrt(n_in))
    b = randn(rng, (n_out,), dtype)
    g = randn(rng, (bsz, n_out), dtype)
    return x, w, b, g


def linear_numpy(x, w, b, layout: str):
    y = x @ (w.T if layout == "out_in" else w)
    return y + b if b is not None else y


def linear_grads_numpy(g, x, w, layout: str):
    if layout == "out_in":
        return g @ w, g.T @ x, g.sum(axis=0)
    return g @ w.T, x.T @ g, g.sum(axis=0)


def _torch_linear(torch, layout: str) -> Callable:
    """torch's linear in ``layout``: F.linear for (out, in), addmm for (in, out)."""
    if layout == "out_in":
        return torch.nn.functional.linear
    return lambda tx, tw, tb: torch.addmm(tb, tx, tw)


def linear_impls(ns, torch, layout: str, x, w, b) -> Impls:
    lin = need(ns, "linear")
    impls = {
        "matgrad": lambda: lin(x, w, b, weight_layout=layout),
        "numpy": lambda: linear_numpy(x, w, b, layout),
    }
    if torch is not None:
        fwd = _torch_linear(torch, layout)
        tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
        impls["torch"] = lambda: fwd(tx, tw, tb)
    return impls


def linear_backward_impls(ns, torch, layout: str, x, w, b, g) -> Impls:
    lb = need(ns, "linear_backward")
    impls = {
        "matgrad": lambda: lb(g, x, w, weight_layout=layout),
        "numpy": lambda: linear_grads_numpy(g, x, w, layout),
    }
    if torch is not None:
        impls["torch"] = torch_grad_fn(torch, _torch_linear(torch, layout), (x, w, b), g)
    return impls


# ------------------------------------------------------------------------- the MLP step

#: N, D, H, C of the bench's training step (an MNIST-sized input).
MLP_SHAPE = (256, 784, 1024, 10)


def mlp2_inputs(dtype, shape: tuple = MLP_SHAPE, seed: int = 4) -> tuple:
    """(params, X, y) for :func:`mlp2_numpy`, weights (in, out)."""
    n, d, h, c = shape
    rng = np.random.default_rng(seed)
    params = {
        "W1": randn(rng, (d, h), dtype, 1.0 / math.sqrt(d)),
        "b1": randn(rng, (h,), dtype, 0.1),
        "W2": randn(rng, (h, c), dtype, 1.0 / math.sqrt(h)),
        "b2": randn(rng, (c,), dtype, 0.1),
    }
    X = randn(rng, (n, d), dtype)
    y = rng.integers(0, c, size=n).astype(np.int64)
    return params, X, y


def mlp2_flops(shape: tuple = MLP_SHAPE) -> float:
    """Forward 2N(DH + HC); backward dW2 and dH1 (2·2NHC) and dW1 (2NDH); no dX."""
    n, d, h, c = shape
    return 2.0 * n * (d * h + h * c) + 2.0 * n * (d * h + 2 * h * c)


def mlp2_numpy(params: dict, X: np.ndarray, y: np.ndarray, reg: float = 0.0):
    """The two-layer MLP step in NumPy: ReLU hidden layer, mean softmax cross-entropy, L2
    penalty ``reg * (ΣW1² + ΣW2²)``; returns (loss, grads)."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    z1 = X @ W1 + b1
    h = np.maximum(z1, 0)
    s = h @ W2 + b2
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -np.mean(np.log(p[rows, y])) + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    dz2 = p
    dz2[rows, y] -= 1
    dz2 /= n
    dW2 = h.T @ dz2 + 2 * reg * W2
    db2 = dz2.sum(axis=0)
    dh = dz2 @ W2.T
    dh[z1 <= 0] = 0
    dW1 = X.T @ dh + 2 * reg * W1
    db1 = dh.sum(axis=0)
    return float(loss), {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def torch_mlp2_step(torch, params: dict, X, y, reg: float = 0.0) -> Callable:
    """The same step as torch writes it: weights in torch's (out, in) layout, F.linear,
    F.cross_entropy and autograd."""
    F = torch.nn.functional
    tp = [torch.from_numpy(np.ascontiguousarray(params["W1"].T)).requires_grad_(True),
          torch.from_numpy(params["b1"].copy()).requires_grad_(True),
          torch.from_numpy(np.ascontiguousarray(params["W2"].T)).requires_grad_(True),
          torch.from_numpy(params["b2"].copy()).requires_grad_(True)]
    tX, ty = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        W1, b1, W2, b2 = tp
        scores = F.linear(F.relu(F.linear(tX, W1, b1)), W2, b2)
        loss = F.cross_entropy(scores, ty)
        if reg:
            loss = loss + reg * (W1.pow(2).sum() + W2.pow(2).sum())
        return loss, torch.autograd.grad(loss, tp)

    return step


def mlp2_impls(ns, torch, params: dict, X, y, reg: float = 0.0) -> Impls:
    step = need(need(ns, "nn"), "mlp2_loss_and_grads")
    impls = {
        "matgrad": lambda: step(params, X, y, reg),
        "numpy": lambda: mlp2_numpy(params, X, y, reg),
    }
    if torch is not None:
        impls["torch"] = torch_mlp2_step(torch, params, X, y, reg)
    return impls


#: The torch.nn model of the module-step cases: (batch, in, hidden, classes).
TORCH_MLP_SHAPE = (256, 784, 256, 10)


def torch_module_flops(shape: tuple = TORCH_MLP_SHAPE) -> float:
    """Forward and backward of both layers: three GEMMs' worth per layer."""
    n, d, h, c = shape
    return 6.0 * n * (d * h + h * c)


def torch_module_step_impls(torch, compiled: bool, shape: tuple = TORCH_MLP_SHAPE) -> Impls:
    """A training step (forward, cross-entropy, backward) of Linear → ReLU → Linear built from
    ``matgrad.torch.Linear`` ("matgrad") and from ``torch.nn.Linear`` ("torch"), the same
    initial weights and batch, eager or under ``torch.compile``. Each call returns the loss; the
    gradients are left in the model's parameters (``impl.model``)."""
    if torch is None:
        raise Skip("torch is not installed")
    import matgrad.torch as mt  # noqa: PLC0415

    n, d, h, c = shape
    gen = torch.Generator().manual_seed(5)
    X, y = torch.randn(n, d, generator=gen), torch.randint(0, c, (n,), generator=gen)

    def impl(layer):
        torch.manual_seed(0)
        model = torch.nn.Sequential(layer(d, h), torch.nn.ReLU(), layer(h, c))

        def step():
            model.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss

        run = torch.compile(step) if compiled else step
        run.model = model
        return run

    return {"matgrad": impl(mt.Linear), "torch": impl(torch.nn.Linear)}


# ------------------------------------------------------------------- device-resident (GPU)


def torch_cuda(torch):
    """torch when it has a CUDA device, with TF32 off so that its float32 products are exact
    float32 like matgrad.gpu's (cuBLAS FP32); else None."""
    if torch is None or not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch


def resident(run: Callable, sync: Callable, calls: int) -> Callable:
    """``calls`` device-resident runs queued, then one wait: a sample times the device's work,
    not the launch-to-wait round trip of a single product."""
    def sample():
        for _ in range(calls):
            out = run()
        sync()
        return out
    return sample


def resident_impls(gpu, torch, op: str, host: tuple, calls: int, layout: str = "out_in") -> Impls:
    """``op`` ("matmul", "linear", "linear_backward") on operands uploaded once: matgrad.gpu
    against torch on CUDA (when there is one), each ``calls`` products per sample."""
    dev = tuple(gpu.asarray(v) for v in host)
    mg = {
        "matmul": lambda a, b: gpu.matmul(a, b),
        "linear": lambda x, w, b: gpu.linear(x, w, b, weight_layout=layout),
        "linear_backward": lambda g, x, w: gpu.linear_backward(g, x, w, weight_layout=layout),
    }[op]
    impls = {"matgrad": resident(lambda: mg(*dev), gpu.synchronize, calls)}
    cuda = torch_cuda(torch)
    if cuda is not None:
        t = [cuda.from_numpy(v).cuda() for v in host]
        if op == "matmul":
            run = lambda: cuda.matmul(t[0], t[1])  # noqa: E731
        elif op == "linear":
            fwd = _torch_linear(cuda, layout)
            run = lambda: fwd(t[0], t[1], t[2])  # noqa: E731
        else:
            g, x, w = t
            leaves = [x.clone().requires_grad_(True), w.clone().requires_grad_(True),
                      cuda.zeros(g.shape[1], device="cuda", requires_grad=True)]
            out = _torch_linear(cuda, layout)(*leaves)
            run = lambda: cuda.autograd.grad(out, leaves, g, retain_graph=True)  # noqa: E731
        impls["torch"] = resident(run, cuda.cuda.synchronize, calls)
    return impls
