"""asv benchmark suites for matgrad (see asv.conf.json at the repository root).

Shared helpers live here.  Conventions used by every suite:

* An ``impl`` parameter picks the implementation: ``"matgrad"``, ``"numpy"`` or
  ``"torch"``, so the baselines are timed in the same suite and compare
  directly in ``asv compare`` / the published graphs.
* A function matgrad does not have (yet), or torch not being installed, makes
  ``setup`` raise ``NotImplementedError``: asv records the benchmark as
  skipped (NaN), not as failed.
* torch is optional and imported lazily (see ``torch_module``).
* ``MATGRAD_ASV_SKIP_LARGE=1`` skips the n=4096 matmul cases (used by
  ``benchmarks/smoke.py`` to keep the smoke run short).
* ``MATGRAD_ASV_THREADS=N`` pins matgrad and torch to N threads; by default
  torch is pinned to matgrad's thread count.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

IMPLS = ["matgrad", "numpy", "torch"]
#: the big square-matmul grid compares with NumPy only: each torch benchmark
#: pays torch's import in its own process (asv spawns one per benchmark).
IMPLS_NO_TORCH = ["matgrad", "numpy"]
LARGE_N = 4096


def matgrad_module():
    try:
        import matgrad
    except ImportError as exc:  # pragma: no cover - asv env without the project
        raise NotImplementedError(f"matgrad is not importable: {exc}") from exc
    n = os.environ.get("MATGRAD_ASV_THREADS")
    if n and hasattr(matgrad, "set_num_threads"):
        matgrad.set_num_threads(int(n))
    return matgrad


def need(name: str):
    """``matgrad.<name>`` (dotted names allowed), or NotImplementedError -> skip."""
    obj = matgrad_module()
    path = "matgrad"
    for part in name.split("."):
        path += "." + part
        nxt = getattr(obj, part, None)
        if nxt is None and isinstance(obj, type(os)):  # a submodule not imported yet
            try:
                import importlib

                nxt = importlib.import_module(path)
            except ImportError:
                nxt = None
        if nxt is None:
            raise NotImplementedError(f"{path} is not available in this build")
        obj = nxt
    return obj


def matgrad_threads() -> int:
    mg = matgrad_module()
    get = getattr(mg, "get_num_threads", None)
    if get is not None:
        return int(get())
    return int(os.environ.get("MATGRAD_ASV_THREADS") or os.cpu_count() or 1)


def torch_module():
    """torch, pinned to matgrad's thread count; NotImplementedError (skip) if missing.

    Imported lazily: asv spawns a fresh process per benchmark (its default
    launch method), so importing torch (~3 s) at module level would slow down
    every benchmark, and would add torch's footprint to every ``peakmem_``.
    """
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install
        raise NotImplementedError(f"torch is not available: {exc!r}") from exc
    torch.set_num_threads(matgrad_threads())
    return torch


def skip_large(n: int) -> None:
    if n >= LARGE_N and os.environ.get("MATGRAD_ASV_SKIP_LARGE"):
        raise NotImplementedError(f"n={n} skipped (MATGRAD_ASV_SKIP_LARGE is set)")


def rand(shape, dtype, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def matmul_fn(impl: str, a: np.ndarray, b: np.ndarray):
    """A zero-argument callable computing ``a @ b`` with ``impl``."""
    if impl == "matgrad":
        mm = need("matmul")
        return lambda: mm(a, b)
    if impl == "numpy":
        return lambda: np.matmul(a, b)
    if impl == "torch":
        torch = torch_module()
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.matmul(ta, tb)
    raise ValueError(impl)


def linear_inputs(shape, layout, dtype=np.float32, seed=1):
    bsz, n_in, n_out = shape
    x = rand((bsz, n_in), dtype, seed)
    wshape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
    w = rand(wshape, dtype, seed + 1, 1.0 / math.sqrt(n_in))
    b = rand((n_out,), dtype, seed + 2)
    g = rand((bsz, n_out), dtype, seed + 3)
    return x, w, b, g


def linear_fn(impl, layout, x, w, b):
    if impl == "matgrad":
        lin = need("linear")
        return lambda: lin(x, w, b, weight_layout=layout)
    if impl == "numpy":
        wt = w.T if layout == "out_in" else w
        return lambda: x @ wt + b
    if impl == "torch":
        torch = torch_module()
        tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
        if layout == "out_in":
            F = torch.nn.functional
            return lambda: F.linear(tx, tw, tb)
        return lambda: torch.addmm(tb, tx, tw)
    raise ValueError(impl)


def torch_grad_fn(make_out, leaves, grad_out):
    """Backward only: the graph is built once; ``autograd.grad`` re-runs it."""
    torch = torch_module()
    leaves = [torch.from_numpy(v.copy()).requires_grad_(True) for v in leaves]
    out = make_out(*leaves)
    g = torch.from_numpy(grad_out)
    return lambda: torch.autograd.grad(out, leaves, g, retain_graph=True)


def linear_backward_fn(impl, layout, x, w, b, g):
    if impl == "matgrad":
        lb = need("linear_backward")
        return lambda: lb(g, x, w, weight_layout=layout)
    if impl == "numpy":
        if layout == "out_in":
            return lambda: (g @ w, g.T @ x, g.sum(axis=0))
        return lambda: (g @ w.T, x.T @ g, g.sum(axis=0))
    if impl == "torch":
        torch = torch_module()
        if layout == "out_in":
            fwd = torch.nn.functional.linear
        else:
            def fwd(tx, tw, tb):
                return torch.addmm(tb, tx, tw)
        return torch_grad_fn(fwd, (x, w, b), g)
    raise ValueError(impl)


def gflops(fn, flops: float, min_time: float = 0.2, min_calls: int = 3) -> float:
    """Median GFLOP/s of ``fn`` over at least ``min_calls`` calls / ``min_time`` s."""
    fn()  # warm-up
    times = []
    t_end = time.perf_counter() + min_time
    while len(times) < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 1000:
            break
    times.sort()
    return flops / times[len(times) // 2] / 1e9


def shape_label(shape) -> str:
    bsz, n_in, n_out = shape
    return f"{bsz}x{n_in}->{n_out}"


def parse_shape(label: str):
    bsz, rest = label.split("x", 1)
    n_in, n_out = rest.split("->")
    return int(bsz), int(n_in), int(n_out)
