"""asv benchmark suites for matgrad (see asv.conf.json at the repository root).

The operations and their NumPy/torch counterparts come from the package's own catalogue,
:mod:`matgrad.bench.reference`, which ``python -m matgrad bench`` times too; this module only
adapts it to asv's conventions:

* An ``impl`` parameter picks the implementation: ``"matgrad"``, ``"numpy"`` or ``"torch"``,
  so the baselines are timed in the same suite and compare directly in ``asv compare`` and
  the published graphs.
* What cannot run here (torch not installed, a function this build of matgrad lacks) makes
  ``setup`` raise ``NotImplementedError``: asv records the benchmark as skipped, not failed.
* torch is imported lazily, only by the benchmarks that time it (asv spawns a process per
  benchmark, and importing torch takes seconds and adds its footprint to every ``peakmem_``).
* ``MATGRAD_ASV_SKIP_LARGE=1`` skips the n=4096 matmul cases (the smoke run sets it).
* ``MATGRAD_ASV_THREADS=N`` pins matgrad to N threads; torch follows matgrad's count.
"""

from __future__ import annotations

import os
import time

import numpy as np

IMPLS = ["matgrad", "numpy", "torch"]
#: the big square-matmul grid compares with NumPy only: each torch benchmark pays torch's
#: import in its own process (asv spawns one per benchmark).
IMPLS_NO_TORCH = ["matgrad", "numpy"]
LARGE_N = 4096


def matgrad_module():
    try:
        import matgrad
    except ImportError as exc:  # pragma: no cover - an asv env without the project
        raise NotImplementedError(f"matgrad is not importable: {exc}") from exc
    n = os.environ.get("MATGRAD_ASV_THREADS")
    if n:
        matgrad.set_num_threads(int(n))
    return matgrad


def reference():
    """The package's catalogue (:mod:`matgrad.bench.reference`)."""
    matgrad_module()
    try:
        from matgrad.bench import reference
    except ImportError as exc:  # a build older than the catalogue
        raise NotImplementedError(f"matgrad.bench.reference is not available: {exc}") from exc
    return reference


def torch_module():
    """torch on matgrad's thread count; NotImplementedError (skip) if it is missing."""
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install
        raise NotImplementedError(f"torch is not available: {exc!r}") from exc
    torch.set_num_threads(matgrad_module().get_num_threads())
    return torch


def impl_fn(impl: str, make: str, *args):
    """The ``impl`` implementation of ``reference.<make>(matgrad, torch, *args)``."""
    ref = reference()
    torch = torch_module() if impl == "torch" else None
    try:
        impls = getattr(ref, make)(matgrad_module(), torch, *args)
    except ref.Skip as exc:
        raise NotImplementedError(str(exc)) from exc
    return impls[impl]


def skip_large(n: int) -> None:
    if n >= LARGE_N and os.environ.get("MATGRAD_ASV_SKIP_LARGE"):
        raise NotImplementedError(f"n={n} skipped (MATGRAD_ASV_SKIP_LARGE is set)")


def rand(shape, dtype, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


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
