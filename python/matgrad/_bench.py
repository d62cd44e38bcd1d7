"""Benchmark and self-check logic behind ``python -m matgrad``.

Nothing here is imported by ``import matgrad``; the CLI in ``__main__`` is a
thin argparse layer over :func:`run_bench`, :func:`run_check` and
:func:`run_demo`.

Every benchmark case first checks matgrad's result against a reference
(NumPy, in the same dtype) and only then times it.  Implementations are
interleaved inside each repeat (matgrad, numpy, torch, matgrad, numpy, torch,
...) so that a noisy, shared machine slows all of them alike; the figure
reported is the median of the repeats.  A function of matgrad that does not
exist (yet) makes its cases skip with a note instead of failing.
"""

from __future__ import annotations

import datetime as _dt
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import statistics
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Relative tolerance per dtype.  The absolute tolerance is this times the
#: RMS of the reference, so that entries close to zero in a long dot product
#: are judged against the size of the accumulated terms, not their own.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

QUICK_SIZES = (64, 128, 256, 512, 1024)
FULL_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
LINEAR_SHAPES = ((64, 784, 256), (256, 1024, 1024), (512, 768, 3072), (2048, 1024, 1024))
QUICK_LINEAR_SHAPES = LINEAR_SHAPES[:2]
MLP_SHAPE = (256, 784, 1024, 10)  # N, D, H, C


class Skip(Exception):
    """A case or check that cannot run here (missing function, no torch...)."""


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def _u(text: str) -> str:
    """``text`` with 'µ' replaced when stdout cannot encode it."""
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(enc)
        return text
    except (UnicodeEncodeError, LookupError):
        return text.replace("µ", "u").replace("×", "x")


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return _u(f"{seconds * 1e6:.1f} µs")
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def fmt_gflops(g: float | None) -> str:
    if g is None:
        return "-"
    return f"{g:.1f}" if g >= 10 else f"{g:.2f}"


def close_enough(res: Any, ref: np.ndarray, dtype: Any = None) -> tuple[bool, str]:
    """``np.allclose`` of ``res`` and ``ref`` with a dtype-appropriate tolerance.

    Also checks that shape and dtype agree.  Returns ``(ok, detail)``.
    """
    ref = np.asarray(ref)
    if not isinstance(res, np.ndarray):
        if np.isscalar(res) and ref.ndim == 0:
            res = np.asarray(res)
        else:
            return False, f"result is {type(res).__name__}, not ndarray"
    if res.shape != ref.shape:
        return False, f"shape {res.shape} != expected {ref.shape}"
    if dtype is None:
        dtype = ref.dtype
    dtype = np.dtype(dtype)
    if res.dtype != ref.dtype:
        return False, f"dtype {res.dtype} != expected {ref.dtype}"
    if dtype.kind in "iub":
        ok = bool(np.array_equal(res, ref))
        return ok, "exact" if ok else "integer result differs"
    rtol = RTOL.get(dtype, 1e-4)
    r64 = ref.astype(np.float64, copy=False)
    scale = float(np.sqrt(np.mean(np.square(r64)))) if r64.size else 0.0
    atol = rtol * max(scale, 1e-30)
    if r64.size == 0:
        return True, "empty"
    if not np.all(np.isfinite(res)):
        return False, "result has non-finite values"
    err = float(np.max(np.abs(res.astype(np.float64) - r64)))
    ok = bool(np.allclose(res, ref, rtol=rtol, atol=atol))
    rel = err / scale if scale > 0 else err
    return ok, f"max|err|={err:.3g} (={rel:.2g} x rms, rtol={rtol:g})"


def _import_matgrad():
    import matgrad  # noqa: PLC0415

    return matgrad


def _import_torch(use_torch: bool = True):
    if not use_torch:
        return None
    try:
        import torch  # noqa: PLC0415
    except Exception:  # ImportError, or a broken install
        return None
    return torch


def gpu_status(mg) -> tuple[bool, str]:
    """Whether matgrad has a usable GPU backend, and a line saying why (not)."""
    try:
        gpu = importlib.import_module("matgrad.gpu")
    except ImportError:
        gpu = getattr(mg, "gpu", None)
    if gpu is None:
        return False, "matgrad.gpu is not part of this build"
    fn = getattr(gpu, "is_available", None)
    if fn is None:
        return False, "matgrad.gpu.is_available() is missing"
    try:
        ok = bool(fn())
    except Exception as exc:  # a driver/adapter problem must not crash the CLI
        return False, f"matgrad.gpu.is_available() raised {exc!r}"
    if not ok:
        detail = ""
        for name in ("adapter_info", "info", "describe"):
            f = getattr(gpu, name, None)
            if callable(f):
                try:
                    detail = f" ({f()})"
                except Exception:
                    pass
                break
        return False, "no GPU adapter available" + detail
    desc = ""
    for name in ("adapter_info", "info", "describe", "adapter_name"):
        f = getattr(gpu, name, None)
        if callable(f):
            try:
                desc = f": {f()}"
            except Exception:
                pass
            break
    return True, "GPU adapter available" + desc


def _call_or(mg, name: str, default: Any = None) -> Any:
    f = getattr(mg, name, None)
    if not callable(f):
        return default
    try:
        return f()
    except Exception as exc:
        return f"<error: {exc!r}>"


def available_kernels(mg) -> Any:
    for name in ("available_kernels", "simd_kernels", "kernels", "available_simd_kernels"):
        f = getattr(mg, name, None)
        if callable(f):
            try:
                return list(f())
            except Exception as exc:
                return f"<error: {exc!r}>"
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _numpy_blas() -> str | None:
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.25
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        name, ver = blas.get("name"), blas.get("version")
        if name:
            return f"{name} {ver}" if ver else name
    except Exception:
        pass
    return None


def metadata(mg, torch, threads: int | None, **extra: Any) -> dict:
    meta = {
        "matgrad_version": getattr(mg, "__version__", None),
        "simd_kernel": _call_or(mg, "simd_kernel"),
        "available_kernels": available_kernels(mg),
        "threads": threads,
        "numpy_version": np.__version__,
        "numpy_blas": _numpy_blas(),
        "torch_version": getattr(torch, "__version__", None) if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


class _Threads:
    """Pin matgrad, torch and (if threadpoolctl is there) NumPy's BLAS to n threads."""

    def __init__(self, mg, torch, n: int | None):
        self.mg, self.torch, self.n = mg, torch, n
        self._limiter = None
        self._torch_prev = None

    def __enter__(self) -> int | None:
        mg, torch = self.mg, self.torch
        if self.n is not None:
            setter = getattr(mg, "set_num_threads", None)
            if setter is None:
                raise Skip("matgrad.set_num_threads() is missing; cannot honour --threads")
            setter(int(self.n))
        n = self.n
        getter = getattr(mg, "get_num_threads", None)
        if getter is not None:
            try:
                n = int(getter())
            except Exception:
                pass
        if torch is not None and n:
            self._torch_prev = torch.get_num_threads()
            torch.set_num_threads(n)
        if n:
            try:
                from threadpoolctl import threadpool_limits  # noqa: PLC0415

                self._limiter = threadpool_limits(limits=n, user_api="blas")
            except Exception:
                self._limiter = None
        return n

    def __exit__(self, *exc) -> None:
        if self._limiter is not None:
            self._limiter.restore_original_limits()
        if self.torch is not None and self._torch_prev is not None:
            self.torch.set_num_threads(self._torch_prev)


# --------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------


class _Progress:
    """tqdm when installed, else a small bar of our own on stderr."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.n, self.enabled = total, 0, enabled
        self._tqdm = None
        self._tty = sys.stderr.isatty()
        if not enabled:
            return
        try:
            from tqdm import tqdm  # noqa: PLC0415

            self._tqdm = tqdm(total=total, file=sys.stderr, unit="case", leave=False,
                              dynamic_ncols=True)
        except Exception:
            self._tqdm = None

    def step(self, label: str) -> None:
        """Announce the case about to run."""
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.set_description_str(label[:40])
            return
        width = 24
        done = int(width * self.n / max(self.total, 1))
        bar = "#" * done + "." * (width - done)
        line = f"[{bar}] {self.n}/{self.total} {label}"
        if self._tty:
            sys.stderr.write("\r" + line[:100].ljust(100))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done_one(self) -> None:
        self.n += 1
        if self._tqdm is not None:
            self._tqdm.update(1)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        elif self._tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------


def _time_calls(fn: Callable[[], Any], n: int) -> float:
    """Seconds taken by ``n`` calls of ``fn`` in a row."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def _calibrate(fn: Callable[[], Any], min_sample: float, settle: float) -> tuple[int, float]:
    """Warm ``fn`` up and find how many calls make one sample >= min_sample.

    It starts after the same pause as the samples (without it, the threads the previous
    case's last library left spinning slowed the first implementation's calibration ~3x,
    which then timed samples of a third of min_sample, more exposed to the host's noise), and
    takes the least of three timings, as a slow moment would mean too few calls."""
    wait_until_quiet(settle)
    fn()  # warm-up: first-call costs (allocation, thread pool start, caches)
    n = 1
    while True:
        dt = _time_calls(fn, n)
        if dt >= min_sample * 0.2 or n >= 1 << 20:
            break
        n *= 4 if dt < min_sample * 0.02 else 2
    dt = min(dt, _time_calls(fn, n), _time_calls(fn, n))
    per_call = dt / n
    loops = max(1, math.ceil(min_sample / max(per_call, 1e-9)))
    return loops, per_call


# Pause after each implementation's sample, before the next one's: libraries leave their idle
# threads spinning after a call and would take a core from whatever is timed next. torch's
# OpenMP/MKL threads spin ~9 ms; NumPy's OpenBLAS (pthreads build) ~110 ms (both measured with
# time.process_time across a sleep; matgrad right after np.matmul ran at ~0.5x its speed).
# So the pause lasts at least SETTLE_S and then until the process has been quiet (under
# QUIET_CPU of CPU time) for a QUIET_WINDOW_S window, at most SETTLE_MAX_S. Unlike
# OMP_WAIT_POLICY=PASSIVE or OPENBLAS_THREAD_TIMEOUT, which change how a library behaves
# within its own sample (PASSIVE made torch's n=64 matmul 5x slower), a pause leaves each
# library as it is.
SETTLE_S = 0.02
QUIET_WINDOW_S = 0.005
QUIET_CPU = 0.1
SETTLE_MAX_S = 0.5

# Untimed calls after the pause, for at least this long (and at least one call), before each
# sample. The first call after a pause was ~1.5 ms slow (a 512² f32 matmul: 3.6 vs 2.1 ms; the
# vCPU and its caches waking up), and the first few calls after another library's GEMM were
# slow for ~10 ms more, whichever library came next: after NumPy's (OpenBLAS, two threads)
# 512² f32 matmul, matgrad's next calls took 3.7, 2.0, 2.0, 1.9 ms against 2.4, 1.7, 1.6, 1.6
# after its own, torch's 7.9, 2.2, 1.9, 1.9 against 2.7, 1.8, 1.7, 1.7 (means of 6; for
# matgrad, /proc showed the scheduler had put its worker on the caller's core). With a fixed
# order the same library always paid for the same predecessor; a sample now measures each
# library's steady state, the one a loop of calls runs in.
WARM_S = 0.02


def wait_until_quiet(min_s: float = SETTLE_S, max_s: float = SETTLE_MAX_S) -> float:
    """Sleep ``min_s``, then until no thread of this process spins (or ``max_s`` in all);
    returns the seconds slept."""
    start = time.perf_counter()
    time.sleep(min_s)
    while time.perf_counter() - start < max_s:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(QUIET_WINDOW_S)
        if time.process_time() - cpu0 <= QUIET_CPU * (time.perf_counter() - wall0):
            break
    return time.perf_counter() - start


def _warm_up(fn: Callable[[], Any], seconds: float) -> None:
    """Calls ``fn`` once, then again until ``seconds`` have passed (see :data:`WARM_S`)."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def time_interleaved(impls: dict[str, Callable[[], Any]], *, repeats: int,
                     min_sample: float, slow_call: float = 0.5,
                     settle: float = SETTLE_S, warm: float = WARM_S) -> dict[str, dict]:
    """Median seconds per call of each implementation, interleaved per repeat, with a pause
    of at least ``settle`` seconds before each sample that lasts until no library's threads
    spin (see :func:`wait_until_quiet`), so none overlap it, and untimed calls for ``warm``
    seconds (at least one) after it."""
    loops: dict[str, int] = {}
    per_call: dict[str, float] = {}
    for name, fn in impls.items():
        loops[name], per_call[name] = _calibrate(fn, min_sample, settle)
    if max(per_call.values()) > slow_call:  # a few seconds per sample is enough
        repeats = min(repeats, 3)
    samples: dict[str, list[float]] = {name: [] for name in impls}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in impls.items():
                n = loops[name]
                wait_until_quiet(settle)
                _warm_up(fn, warm)
                samples[name].append(_time_calls(fn, n) / n)
    finally:
        if gc_was:
            gc.enable()
    return {
        name: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "max_s": max(s),
            "repeats": len(s),
            "loops": loops[name],
        }
        for name, s in samples.items()
    }


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    op: str
    dtype: str
    shape: str
    x: float  # abscissa for the plot
    flops: float
    build: Callable[[], tuple[dict, Callable[[], tuple[bool, str]]]]
    small: bool = False
    notes: list = field(default_factory=list)


def _need(obj: Any, name: str, what: str | None = None) -> Any:
    f = getattr(obj, name, None) if obj is not None else None
    if f is None:
        raise Skip(f"{what or name} is not available in this build")
    return f


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _randn(rng, shape, dtype, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _matmul_case(ns, torch, name, op, dtype, a, b, flops, x, small=False) -> Case:
    dt = np.dtype(dtype)

    def build():
        mm = _need(ns, "matmul", "matgrad.matmul")
        impls = {"matgrad": lambda: mm(a, b), "numpy": lambda: np.matmul(a, b)}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            impls["torch"] = lambda: torch.matmul(ta, tb)

        def check():
            return close_enough(np.asarray(mm(a, b)), np.matmul(a, b))

        return impls, check

    shape = "x".join(map(str, a.shape)) + " @ " + "x".join(map(str, b.shape))
    return Case(name, op, dt.name, shape, x, flops, build, small=small)


def _lazy_matmul_case(ns, torch, name, op, dtype, shape_a, shape_b, flops, x, *,
                      transpose=False, small=False) -> Case:
    """A matmul case whose arrays are only made when the case runs."""
    dt = np.dtype(dtype)
    holder: dict = {}

    def build():
        rng = _rng(zlib.crc32(name.encode()))
        if transpose:
            a = _randn(rng, shape_a[::-1], dt).T
            b = _randn(rng, shape_b[::-1], dt).T
        else:
            a = _randn(rng, shape_a, dt)
            b = _randn(rng, shape_b, dt)
        holder["case"] = _matmul_case(ns, torch, name, op, dt, a, b, flops, x, small)
        return holder["case"].build()

    shape = "x".join(map(str, shape_a)) + " @ " + "x".join(map(str, shape_b))
    if transpose:
        shape += " (a.T, b.T)"
    return Case(name, op, dt.name, shape, x, flops, build, small=small)


def _linear_np(x, w, b, layout):
    y = x @ (w.T if layout == "out_in" else w)
    return y + b if b is not None else y


def _linear_case(ns, torch, layout, shape, dtype=np.float32) -> Case:
    bsz, n_in, n_out = shape
    dt = np.dtype(dtype)
    name = f"linear[{layout}] {dt.name} {bsz}x{n_in}->{n_out}"

    def build():
        lin = _need(ns, "linear", "matgrad.linear")
        rng = _rng(1)
        x = _randn(rng, (bsz, n_in), dt)
        wshape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
        w = _randn(rng, wshape, dt, 1.0 / math.sqrt(n_in))
        b = _randn(rng, (n_out,), dt)
        impls = {
            "matgrad": lambda: lin(x, w, b, weight_layout=layout),
            "numpy": lambda: _linear_np(x, w, b, layout),
        }
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
            F = torch.nn.functional
            if layout == "out_in":
                impls["torch"] = lambda: F.linear(tx, tw, tb)
            else:
                impls["torch"] = lambda: torch.addmm(tb, tx, tw)

        def check():
            return close_enough(np.asarray(lin(x, w, b, weight_layout=layout)),
                                _linear_np(x, w, b, layout))

        return impls, check

    flops = 2.0 * bsz * n_in * n_out + bsz * n_out
    return Case(name, f"linear[{layout}]", dt.name, f"{bsz}x{n_in}->{n_out}",
                flops, flops, build)


def _linear_grads_np(g, x, w, layout):
    if layout == "out_in":
        return g @ w, g.T @ x, g.sum(axis=0)
    return g @ w.T, x.T @ g, g.sum(axis=0)


def _check_grads(got, want, names) -> tuple[bool, str]:
    if not isinstance(got, (tuple, list)) or len(got) != len(want):
        return False, f"expected a {len(want)}-tuple, got {type(got).__name__}"
    details, ok_all = [], True
    for n, gv, wv in zip(names, got, want):
        if wv is None:
            if gv is not None:
                ok_all = False
                details.append(f"{n}: expected None")
            continue
        ok, d = close_enough(gv, wv)
        ok_all &= ok
        details.append(f"{n}: {d}")
    return ok_all, "; ".join(details)


def _torch_grad_fn(torch, make_out, leaves, grad_out):
    """Backward-only torch timing: graph built once, ``autograd.grad`` reruns it."""
    leaves = [torch.from_numpy(v.copy()).requires_grad_(True) for v in leaves]
    out = make_out(*leaves)
    g = torch.from_numpy(grad_out)
    return lambda: torch.autograd.grad(out, leaves, g, retain_graph=True)


def _linear_backward_case(ns, torch, layout, shape, dtype=np.float32) -> Case:
    bsz, n_in, n_out = shape
    dt = np.dtype(dtype)
    name = f"linear_backward[{layout}] {dt.name} {bsz}x{n_in}->{n_out}"

    def build():
        lb = _need(ns, "linear_backward", "matgrad.linear_backward")
        rng = _rng(2)
        x = _randn(rng, (bsz, n_in), dt)
        wshape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
        w = _randn(rng, wshape, dt, 1.0 / math.sqrt(n_in))
        b = _randn(rng, (n_out,), dt)
        g = _randn(rng, (bsz, n_out), dt)
        impls = {
            "matgrad": lambda: lb(g, x, w, weight_layout=layout),
            "numpy": lambda: _linear_grads_np(g, x, w, layout),
        }
        if torch is not None:
            F = torch.nn.functional
            if layout == "out_in":
                fwd = F.linear
            else:
                def fwd(tx, tw, tb):
                    return torch.addmm(tb, tx, tw)
            impls["torch"] = _torch_grad_fn(torch, fwd, (x, w, b), g)

        def check():
            return _check_grads(lb(g, x, w, weight_layout=layout),
                                _linear_grads_np(g, x, w, layout),
                                ("grad_x", "grad_weight", "grad_bias"))

        return impls, check

    flops = 4.0 * bsz * n_in * n_out + bsz * n_out
    return Case(name, f"linear_backward[{layout}]", dt.name, f"{bsz}x{n_in}->{n_out}",
                flops, flops, build)


def _matmul_backward_case(ns, torch, n, dtype=np.float32) -> Case:
    dt = np.dtype(dtype)
    name = f"matmul_backward {dt.name} n={n}"

    def build():
        mb = _need(ns, "matmul_backward", "matgrad.matmul_backward")
        rng = _rng(3)
        a, b, g = (_randn(rng, (n, n), dt) for _ in range(3))
        impls = {
            "matgrad": lambda: mb(g, a, b),
            "numpy": lambda: (g @ b.T, a.T @ g),
        }
        if torch is not None:
            impls["torch"] = _torch_grad_fn(torch, torch.matmul, (a, b), g)

        def check():
            return _check_grads(mb(g, a, b), (g @ b.T, a.T @ g), ("grad_a", "grad_b"))

        return impls, check

    flops = 4.0 * n**3
    return Case(name, "matmul_backward", dt.name, f"{n}x{n}x{n}", n, flops, build)


def mlp2_numpy(params: dict, X: np.ndarray, y: np.ndarray, reg: float = 0.0,
               half_reg: bool = False):
    """Reference two-layer MLP step: ReLU hidden layer, mean softmax cross-entropy,
    L2 penalty ``reg * (||W1||^2 + ||W2||^2)`` (times 1/2 with ``half_reg``)."""
    if half_reg:
        reg = 0.5 * reg
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n = X.shape[0]
    hpre = X @ W1 + b1
    h = np.maximum(hpre, 0)
    s = h @ W2 + b2
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = -np.mean(np.log(p[rows, y])) + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
    ds = p
    ds[rows, y] -= 1
    ds /= n
    dW2 = h.T @ ds + 2 * reg * W2
    db2 = ds.sum(axis=0)
    dh = ds @ W2.T
    dh[hpre <= 0] = 0
    dW1 = X.T @ dh + 2 * reg * W1
    db1 = dh.sum(axis=0)
    return float(loss), {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _mlp2_fn(ns):
    nn = getattr(ns, "nn", None)
    if nn is None:
        try:
            nn = importlib.import_module(ns.__name__ + ".nn")
        except Exception:
            nn = None
    return _need(nn, "mlp2_loss_and_grads", "matgrad.nn.mlp2_loss_and_grads")


def _mlp2_inputs(dt, shape=MLP_SHAPE, seed=4):
    n, d, h, c = shape
    rng = _rng(seed)
    params = {
        "W1": _randn(rng, (d, h), dt, 1.0 / math.sqrt(d)),
        "b1": _randn(rng, (h,), dt, 0.1),
        "W2": _randn(rng, (h, c), dt, 1.0 / math.sqrt(h)),
        "b2": _randn(rng, (c,), dt, 0.1),
    }
    X = _randn(rng, (n, d), dt)
    y = rng.integers(0, c, size=n).astype(np.int64)
    return params, X, y


def _check_mlp2(res, params, X, y, reg) -> tuple[bool, str]:
    """Compare with :func:`mlp2_numpy`; with reg > 0 either L2 convention
    (``reg*||W||^2`` or ``0.5*reg*||W||^2``) is accepted."""
    if not isinstance(res, (tuple, list)) or len(res) != 2:
        return False, "expected (loss, grads)"
    if reg:
        results = [_check_mlp2_one(res, params, X, y, reg, half) for half in (False, True)]
        for (ok, d), conv in zip(results, ("reg*||W||^2", "0.5*reg*||W||^2")):
            if ok:
                return True, f"[{conv}] {d}"
        return False, " | ".join(f"[{c}] {d}" for (_, d), c in
                                 zip(results, ("reg*||W||^2", "0.5*reg*||W||^2")))
    return _check_mlp2_one(res, params, X, y, reg, False)


def _check_mlp2_one(res, params, X, y, reg, half) -> tuple[bool, str]:
    loss, grads = res
    want_loss, want = mlp2_numpy({k: v.copy() for k, v in params.items()}, X, y, reg, half)
    ok = bool(np.isclose(float(loss), want_loss, rtol=1e-4, atol=1e-6))
    details = [f"loss {float(loss):.6g} vs {want_loss:.6g}"]
    for k in ("W1", "b1", "W2", "b2"):
        if not isinstance(grads, dict) or k not in grads:
            return False, f"grads has no {k!r}"
        o, d = close_enough(np.asarray(grads[k]), want[k])
        ok &= o
        details.append(f"d{k}: {d}")
    return ok, "; ".join(details)


def _mlp2_case(ns, torch, dtype=np.float32) -> Case:
    n, d, h, c = MLP_SHAPE
    dt = np.dtype(dtype)
    name = f"mlp2 step {dt.name} N={n} D={d} H={h} C={c}"

    def build():
        step = _mlp2_fn(ns)
        params, X, y = _mlp2_inputs(dt)
        impls = {
            "matgrad": lambda: step(params, X, y, 0.0),
            "numpy": lambda: mlp2_numpy(params, X, y, 0.0),
        }
        if torch is not None:
            F = torch.nn.functional
            tp = [torch.from_numpy(params[k].copy()).requires_grad_(True)
                  for k in ("W1", "b1", "W2", "b2")]
            tX, ty = torch.from_numpy(X), torch.from_numpy(y)

            def torch_step():
                W1, b1, W2, b2 = tp
                scores = F.relu(tX @ W1 + b1) @ W2 + b2
                loss = F.cross_entropy(scores, ty)
                return loss, torch.autograd.grad(loss, tp)

            impls["torch"] = torch_step

        def check():
            return _check_mlp2(step(params, X, y, 0.0), params, X, y, 0.0)

        return impls, check

    flops = 2.0 * n * (d * h + h * c) + 2.0 * n * (d * h + 2 * h * c)
    return Case(name, "mlp2_step", dt.name, f"N={n} D={d} H={h} C={c}", flops, flops, build)


def build_cases(ns, torch, quick: bool) -> list[Case]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    shapes = QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES
    cases: list[Case] = []
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        for n in sizes:
            cases.append(_lazy_matmul_case(ns, torch, f"matmul {dn} n={n}", "matmul", dt,
                                           (n, n), (n, n), 2.0 * n**3, n))
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        n = 1024
        cases.append(_lazy_matmul_case(ns, torch, f"matmul a.T@b.T {dn} n={n}",
                                       "matmul[transposed]", dt, (n, n), (n, n),
                                       2.0 * n**3, n, transpose=True))
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        cases.append(_lazy_matmul_case(ns, torch, f"matmul small {dn} n=16", "matmul[small]",
                                       dt, (16, 16), (16, 16), 2.0 * 16**3, 16, small=True))
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        cases.append(_lazy_matmul_case(ns, torch, f"matmul batched {dn} 64x(32x32)",
                                       "matmul[batched]", dt, (64, 32, 32), (64, 32, 32),
                                       2.0 * 64 * 32**3, 32, small=True))
    for layout in ("out_in", "in_out"):
        for shape in shapes:
            cases.append(_linear_case(ns, torch, layout, shape))
    for layout in ("out_in", "in_out"):
        for shape in shapes:
            cases.append(_linear_backward_case(ns, torch, layout, shape))
    cases.append(_matmul_backward_case(ns, torch, 1024))
    cases.append(_mlp2_case(ns, torch))
    return cases


# --------------------------------------------------------------------------
# bench driver
# --------------------------------------------------------------------------

BASELINES = ("numpy", "torch")


def _run_case(case: Case, repeats: int, min_sample: float) -> dict:
    rec: dict[str, Any] = {
        "name": case.name, "op": case.op, "dtype": case.dtype, "shape": case.shape,
        "x": case.x, "flops": case.flops, "small": case.small,
    }
    try:
        impls, check = case.build()
    except Skip as exc:
        rec.update(status="skipped", reason=str(exc))
        return rec
    try:
        ok, detail = check()
    except Skip as exc:
        rec.update(status="skipped", reason=str(exc))
        return rec
    except Exception as exc:
        ok, detail = False, f"matgrad raised {type(exc).__name__}: {exc}"
    rec["check_passed"] = bool(ok)
    rec["check_detail"] = detail
    if not ok and "raised" in detail:
        rec["status"] = "error"
        return rec
    # Drop a baseline that cannot run this case (e.g. an odd torch build).
    for name in list(impls):
        if name == "matgrad":
            continue
        try:
            impls[name]()
        except Exception as exc:
            rec.setdefault("notes", []).append(f"{name} baseline dropped: {exc!r}")
            del impls[name]
    times = time_interleaved(impls, repeats=repeats, min_sample=min_sample)
    rec["status"] = "ok"
    rec["impls"] = {}
    for name, t in times.items():
        t["gflops"] = case.flops / t["median_s"] / 1e9 if t["median_s"] > 0 else None
        rec["impls"][name] = t
    mt = times["matgrad"]["median_s"]
    rec["ratio"] = {b: times[b]["median_s"] / mt for b in BASELINES if b in times and mt > 0}
    return rec


def flat_records(cases: list[dict]) -> list[dict]:
    """One row per (case, implementation) for the JSON output."""
    rows = []
    for c in cases:
        if c.get("status") != "ok":
            continue
        mt = c["impls"]["matgrad"]["median_s"]
        for impl, t in c["impls"].items():
            if impl == "matgrad":
                ratio = dict(c["ratio"])
            else:  # how much faster matgrad is than this one; same number as above
                ratio = {"matgrad": mt / t["median_s"]} if t["median_s"] > 0 else {}
            rows.append({
                "name": c["name"], "op": c["op"], "dtype": c["dtype"], "shape": c["shape"],
                "impl": impl, "median_s": t["median_s"], "min_s": t["min_s"],
                "max_s": t["max_s"], "repeats": t["repeats"], "loops": t["loops"],
                "flops": c["flops"], "gflops": t["gflops"], "ratio_vs": ratio,
                "check_passed": c["check_passed"],
            })
    return rows


def format_table(cases: list[dict]) -> str:
    head = ["case", "matgrad", "GFLOP/s", "numpy GF/s", "torch GF/s", "vs numpy",
            "vs torch", "check"]
    rows = []
    for c in cases:
        if c.get("status") == "skipped":
            continue
        if c.get("status") == "error":
            rows.append([c["name"], "-", "-", "-", "-", "-", "-", "FAIL"])
            continue
        im = c["impls"]
        rows.append([
            c["name"],
            fmt_time(im["matgrad"]["median_s"]),
            fmt_gflops(im["matgrad"]["gflops"]),
            fmt_gflops(im.get("numpy", {}).get("gflops")),
            fmt_gflops(im.get("torch", {}).get("gflops")),
            fmt_ratio(c["ratio"].get("numpy")),
            fmt_ratio(c["ratio"].get("torch")),
            "ok" if c["check_passed"] else "FAIL",
        ])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    out = []
    line = "  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i])
                     for i, h in enumerate(head))
    out.append(line)
    out.append("-" * len(line))
    for r in rows:
        out.append("  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i])
                             for i, v in enumerate(r)))
    return "\n".join(out)


def _plot(cases: list[dict], path: str, meta: dict) -> None:
    """GFLOP/s against size, one panel per op/dtype; ops measured at a single
    size share one bar-chart panel at the end."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cases:
        if c.get("status") == "ok":
            groups.setdefault((c["op"], c["dtype"]), []).append(c)
    if not groups:
        raise RuntimeError("nothing to plot: no case ran")
    impls = ("matgrad", "numpy", "torch")
    colors = {"matgrad": "tab:blue", "numpy": "tab:orange", "torch": "tab:green"}
    styles = {"matgrad": "o-", "numpy": "s--", "torch": "^:"}
    multi = sorted(k for k, v in groups.items() if len(v) > 1)
    single = [groups[k][0] for k in sorted(groups) if len(groups[k]) == 1]
    n_panels = len(multi) + (1 if single else 0)
    ncol = min(2, n_panels)
    nrow = math.ceil(n_panels / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.0 * nrow), squeeze=False)
    flat = list(axes.flat)
    for ax, key in zip(flat, multi):
        cs = sorted(groups[key], key=lambda c: c["x"])
        numeric = key[0].startswith("matmul")
        xs = [c["x"] for c in cs] if numeric else list(range(len(cs)))
        for impl in impls:
            ys = [c["impls"].get(impl, {}).get("gflops") for c in cs]
            if all(y is None for y in ys):
                continue
            ys = [float("nan") if y is None else y for y in ys]
            ax.plot(xs, ys, styles[impl], color=colors[impl], label=impl)
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([str(int(x)) for x in xs])
            ax.set_xlabel("n (n x n @ n x n)")
        else:
            ax.set_xticks(xs)
            ax.set_xticklabels([c["shape"] for c in cs], fontsize=8)
            ax.set_xlabel("batch x in -> out")
        ax.set_title(f"{key[0]}  {key[1]}")
        ax.set_ylabel("GFLOP/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if single:
        ax = flat[len(multi)]
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            ys = [c["impls"].get(impl, {}).get("gflops") or 0.0 for c in single]
            if not any(ys):
                continue
            ax.bar([i + (j - 1) * width for i in range(len(single))], ys, width,
                   color=colors[impl], label=impl)
        ax.set_xticks(range(len(single)))
        ax.set_xticklabels([c["name"].replace(" float", "\nfloat").replace(" N=", "\nN=")
                            for c in single], fontsize=7, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("GFLOP/s (log)")
        ax.set_title("single-size cases")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    for ax in flat[n_panels:]:
        ax.axis("off")
    fig.suptitle(f"matgrad {meta.get('matgrad_version')} ({meta.get('simd_kernel')}, "
                 f"{meta.get('threads')} threads) vs numpy {meta.get('numpy_version')}"
                 f" / torch {meta.get('torch_version')} on {meta.get('cpu_model')}",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_bench(*, quick: bool = False, json_path: str | None = None,
              plot_path: str | None = None, threads: int | None = None,
              device: str = "cpu", use_torch: bool = True, filter_re: str | None = None,
              repeats: int | None = None, min_time: float | None = None,
              progress: bool = True) -> int:
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401, PLC0415
        except ImportError:
            print("matgrad bench: --plot needs matplotlib, which is not installed.\n"
                  "Install it with:  pip install 'matgrad[plot]'", file=sys.stderr)
            return EXIT_USAGE
    if threads is not None and threads < 1:
        print("matgrad bench: --threads must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        pattern = re.compile(filter_re) if filter_re else None
    except re.error as exc:
        print(f"matgrad bench: bad --filter regex: {exc}", file=sys.stderr)
        return EXIT_USAGE

    mg = _import_matgrad()
    ns: Any = mg
    if device == "gpu":
        ok, why = gpu_status(mg)
        if not ok:
            print(f"matgrad bench: --device gpu requested but no GPU backend can be used: "
                  f"{why}.\nRun without --device gpu (or with --device cpu) to benchmark "
                  f"the CPU kernels.", file=sys.stderr)
            return EXIT_USAGE
        ns = importlib.import_module("matgrad.gpu")

    torch = _import_torch(use_torch)
    if use_torch and torch is None:
        print("matgrad bench: torch is not installed; comparing against NumPy only "
              "(pip install 'matgrad[torch]')", file=sys.stderr)

    cases = build_cases(ns, torch, quick)
    if pattern is not None:
        cases = [c for c in cases if pattern.search(c.name)]
        if not cases:
            print(f"matgrad bench: --filter {filter_re!r} matches no case", file=sys.stderr)
            return EXIT_USAGE
    reps = repeats if repeats is not None else (3 if quick else 7)
    min_sample = min_time if min_time is not None else (0.005 if quick else 0.020)

    try:
        tctx = _Threads(mg, torch, threads)
        n_threads = tctx.__enter__()
    except Skip as exc:
        print(f"matgrad bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    t_start = time.perf_counter()
    results: list[dict] = []
    bar = _Progress(len(cases), enabled=progress)
    try:
        for case in cases:
            bar.step(case.name)
            results.append(_run_case(case, reps, min_sample))
            bar.done_one()
            gc.collect()
    finally:
        bar.close()
        meta = metadata(mg, torch, n_threads, device=device, quick=quick,
                        repeats=reps, min_sample_s=min_sample)
        tctx.__exit__(None, None, None)
    meta["wall_s"] = round(time.perf_counter() - t_start, 2)

    print(f"matgrad {meta['matgrad_version']}  kernel={meta['simd_kernel']}  "
          f"threads={n_threads}  numpy {np.__version__}"
          + (f"  torch {meta['torch_version']}" if torch is not None else "  (no torch)")
          + f"  device={device}")
    print(f"cpu: {meta['cpu_model']}  ({meta['cpu_count']} logical cpus)")
    print(_u("median of {} repeats, implementations interleaved; ratio = baseline time / "
             "matgrad time (>1: matgrad faster)".format(reps)))
    print()
    print(format_table(results))
    skipped = [c for c in results if c.get("status") == "skipped"]
    if skipped:
        print()
        reasons: dict[str, list[str]] = {}
        for c in skipped:
            reasons.setdefault(c["reason"], []).append(c["name"])
        for reason, names in reasons.items():
            print(f"skipped {len(names)} case(s): {reason}")
    for c in results:
        for note in c.get("notes", []):
            print(f"note: {c['name']}: {note}")
    failed = [c for c in results if c.get("check_passed") is False]

    if json_path:
        payload = {
            "meta": meta,
            "results": flat_records(results),
            "cases": [{k: v for k, v in c.items() if k != "x"} for c in results],
            "skipped": [{"name": c["name"], "reason": c["reason"]} for c in skipped],
            "failed_checks": [{"name": c["name"], "detail": c.get("check_detail")}
                              for c in failed],
        }
        with open(json_path, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"\nwrote {json_path}")
    if plot_path:
        try:
            _plot(results, plot_path, meta)
            print(f"wrote {plot_path}")
        except Exception as exc:
            print(f"matgrad bench: could not write the plot: {exc}", file=sys.stderr)
            if not failed:
                return EXIT_FAILED

    print(f"\n{len(results) - len(skipped)} case(s) run, {len(skipped)} skipped, "
          f"{meta['wall_s']:.1f} s")
    if failed:
        bar_line = "!" * 72
        print(f"\n{bar_line}\nCORRECTNESS CHECK FAILED for {len(failed)} case(s):",
              file=sys.stderr)
        for c in failed:
            print(f"  {c['name']}: {c.get('check_detail')}", file=sys.stderr)
        print(bar_line, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------


class _Checker:
    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self.skipped: list[str] = []

    def run(self, label: str, fn: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = fn()
        except Skip as exc:
            self.skipped.append(label)
            print(f"  skip  {label}: {exc}")
            return
        except Exception as exc:
            ok, detail = False, f"raised {type(exc).__name__}: {exc}"
        if ok:
            self.ok += 1
            print(f"  ok    {label}")
        else:
            self.failed.append(label)
            print(f"  FAIL  {label}: {detail}")


def _mm_inputs(rng, sa, sb, dtype, kind):
    if kind == "transposed":
        a = _randn(rng, sa[::-1], dtype).T
        b = _randn(rng, sb[::-1], dtype).T
    elif kind == "strided":
        a = _randn(rng, tuple(2 * s for s in sa), dtype)[tuple(slice(None, None, 2) for _ in sa)]
        b = _randn(rng, tuple(2 * s for s in sb), dtype)[tuple(slice(1, None, 2) for _ in sb)]
    else:
        a = _randn(rng, sa, dtype)
        b = _randn(rng, sb, dtype)
    return a, b


def run_check(*, use_torch: bool = True, threads: int | None = None) -> int:
    mg = _import_matgrad()
    torch = _import_torch(use_torch)
    if threads is not None:
        if not hasattr(mg, "set_num_threads"):
            print("matgrad check: matgrad.set_num_threads() is missing", file=sys.stderr)
            return EXIT_USAGE
        mg.set_num_threads(int(threads))
    gpu_ok, gpu_why = gpu_status(mg)
    print(f"matgrad {getattr(mg, '__version__', '?')}")
    print(f"  simd kernel       : {_call_or(mg, 'simd_kernel', 'unknown (simd_kernel() missing)')}")
    kern = available_kernels(mg)
    print(f"  available kernels : {', '.join(map(str, kern)) if isinstance(kern, list) else kern or 'unknown'}")
    print(f"  threads           : {_call_or(mg, 'get_num_threads', 'unknown')}")
    print(f"  GPU               : {'yes' if gpu_ok else 'no'} ({gpu_why})")
    print(f"  numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch is not None else ", torch not installed"))
    print(f"  cpu               : {cpu_model()}")
    print()
    rng = _rng(1234)
    ck = _Checker()

    # -- matmul ----------------------------------------------------------
    mm = getattr(mg, "matmul", None)
    mm_cases = [
        ((64, 48), (48, 32), "contiguous"),
        ((257, 300), (300, 129), "contiguous"),
        ((1, 1), (1, 1), "contiguous"),
        ((33, 65), (65, 17), "transposed"),
        ((20, 31), (31, 12), "strided"),
        ((5,), (5, 3), "contiguous"),
        ((4, 5), (5,), "contiguous"),
        ((7,), (7,), "contiguous"),
        ((3, 17, 9), (3, 9, 11), "contiguous"),
        ((2, 1, 7, 5), (3, 5, 4), "contiguous"),
        ((0, 5), (5, 3), "contiguous"),
        ((4, 0), (0, 3), "contiguous"),
    ]
    print("matmul vs numpy.matmul")
    for dt in (np.float32, np.float64):
        for sa, sb, kind in mm_cases:
            a, b = _mm_inputs(rng, sa, sb, dt, kind)
            label = f"matmul {np.dtype(dt).name} {sa}@{sb} {kind}"

            def f(a=a, b=b):
                if mm is None:
                    raise Skip("matgrad.matmul missing")
                return close_enough(np.asarray(mm(a, b)), np.matmul(a, b))

            ck.run(label, f)

    def f_out():
        if mm is None:
            raise Skip("matgrad.matmul missing")
        a, b = _randn(rng, (40, 30), np.float32), _randn(rng, (30, 20), np.float32)
        out = np.empty((40, 20), np.float32)
        res = mm(a, b, out=out)
        if res is not out:
            return False, "out= given but the returned array is not `out`"
        return close_enough(out, a @ b)

    ck.run("matmul f32 out= argument", f_out)

    def f_mixed():
        if mm is None:
            raise Skip("matgrad.matmul missing")
        a, b = _randn(rng, (6, 5), np.float32), _randn(rng, (5, 4), np.float64)
        return close_enough(np.asarray(mm(a, b)), np.matmul(a, b))

    ck.run("matmul f32@f64 promotes like numpy", f_mixed)

    def f_int():
        if mm is None:
            raise Skip("matgrad.matmul missing")
        a = rng.integers(-5, 5, (6, 5))
        b = rng.integers(-5, 5, (5, 4))
        return close_enough(np.asarray(mm(a, b)), np.matmul(a, b))

    ck.run("matmul int64 (numpy semantics)", f_int)

    # -- matmul_backward -------------------------------------------------
    print("matmul_backward vs numpy" + (" and torch autograd" if torch is not None else ""))
    mb = getattr(mg, "matmul_backward", None)
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        a, b = _randn(rng, (37, 53), dt), _randn(rng, (53, 29), dt)
        g = _randn(rng, (37, 29), dt)

        def f_mb(a=a, b=b, g=g):
            if mb is None:
                raise Skip("matgrad.matmul_backward missing")
            return _check_grads(mb(g, a, b), (g @ b.T, a.T @ g), ("grad_a", "grad_b"))

        ck.run(f"matmul_backward {dn} (37,53)@(53,29) vs numpy", f_mb)

        def f_mb_flags(a=a, b=b, g=g):
            if mb is None:
                raise Skip("matgrad.matmul_backward missing")
            ok1, d1 = _check_grads(mb(g, a, b, grad_a=False), (None, a.T @ g),
                                   ("grad_a", "grad_b"))
            ok2, d2 = _check_grads(mb(g, a, b, grad_b=False), (g @ b.T, None),
                                   ("grad_a", "grad_b"))
            return ok1 and ok2, f"grad_a=False: {d1} | grad_b=False: {d2}"

        ck.run(f"matmul_backward {dn} grad_a/grad_b=False give None", f_mb_flags)

        if torch is not None:
            def f_mb_t(a=a, b=b, g=g):
                if mb is None:
                    raise Skip("matgrad.matmul_backward missing")
                ta = torch.from_numpy(a.copy()).requires_grad_(True)
                tb = torch.from_numpy(b.copy()).requires_grad_(True)
                ga, gb = torch.autograd.grad(ta @ tb, (ta, tb), torch.from_numpy(g))
                return _check_grads(mb(g, a, b), (ga.numpy(), gb.numpy()),
                                    ("grad_a", "grad_b"))

            ck.run(f"matmul_backward {dn} vs torch autograd", f_mb_t)

    # -- linear / linear_backward ----------------------------------------
    print("linear / linear_backward vs numpy" + (" and torch" if torch is not None else ""))
    lin = getattr(mg, "linear", None)
    lb = getattr(mg, "linear_backward", None)
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        for layout in ("in_out", "out_in"):
            bsz, n_in, n_out = 19, 45, 23
            x = _randn(rng, (bsz, n_in), dt)
            w = _randn(rng, (n_out, n_in) if layout == "out_in" else (n_in, n_out), dt)
            b = _randn(rng, (n_out,), dt)
            g = _randn(rng, (bsz, n_out), dt)
            for with_bias in (True, False):
                bb = b if with_bias else None

                def f_lin(x=x, w=w, bb=bb, layout=layout):
                    if lin is None:
                        raise Skip("matgrad.linear missing")
                    return close_enough(np.asarray(lin(x, w, bb, weight_layout=layout)),
                                        _linear_np(x, w, bb, layout))

                ck.run(f"linear[{layout}] {dn} bias={with_bias}", f_lin)

            def f_lb(x=x, w=w, g=g, layout=layout):
                if lb is None:
                    raise Skip("matgrad.linear_backward missing")
                return _check_grads(lb(g, x, w, weight_layout=layout),
                                    _linear_grads_np(g, x, w, layout),
                                    ("grad_x", "grad_weight", "grad_bias"))

            ck.run(f"linear_backward[{layout}] {dn} vs numpy", f_lb)

            def f_lb_flags(x=x, w=w, g=g, layout=layout):
                if lb is None:
                    raise Skip("matgrad.linear_backward missing")
                gx, gw, gb = _linear_grads_np(g, x, w, layout)
                res = lb(g, x, w, weight_layout=layout, grad_x=False, grad_bias=False)
                return _check_grads(res, (None, gw, None),
                                    ("grad_x", "grad_weight", "grad_bias"))

            ck.run(f"linear_backward[{layout}] {dn} grad_x/grad_bias=False", f_lb_flags)

            if torch is not None:
                def f_lt(x=x, w=w, b=b, g=g, layout=layout):
                    if lin is None or lb is None:
                        raise Skip("matgrad.linear/linear_backward missing")
                    F = torch.nn.functional
                    tx, tw, tb = (torch.from_numpy(v.copy()).requires_grad_(True)
                                  for v in (x, w, b))
                    ty = F.linear(tx, tw, tb) if layout == "out_in" else torch.addmm(tb, tx, tw)
                    ok1, d1 = close_enough(np.asarray(lin(x, w, b, weight_layout=layout)),
                                           ty.detach().numpy())
                    grads = torch.autograd.grad(ty, (tx, tw, tb), torch.from_numpy(g))
                    ok2, d2 = _check_grads(lb(g, x, w, weight_layout=layout),
                                           tuple(t.numpy() for t in grads),
                                           ("grad_x", "grad_weight", "grad_bias"))
                    return ok1 and ok2, f"forward: {d1} | backward: {d2}"

                ck.run(f"linear[{layout}] {dn} fwd+bwd vs torch autograd", f_lt)

    # -- mlp2 --------------------------------------------------------------
    print("nn.mlp2_loss_and_grads vs numpy" + (" and torch" if torch is not None else ""))
    for reg in (0.0, 0.05):
        def f_mlp(reg=reg):
            step = _mlp2_fn(mg)
            params, X, y = _mlp2_inputs(np.float64, (16, 12, 20, 5), seed=7)
            return _check_mlp2(step(params, X, y, reg), params, X, y, reg)

        ck.run(f"mlp2 f64 reg={reg}", f_mlp)

    if torch is not None:
        def f_mlp_t():
            step = _mlp2_fn(mg)
            params, X, y = _mlp2_inputs(np.float32, (16, 12, 20, 5), seed=8)
            F = torch.nn.functional
            tp = [torch.from_numpy(params[k].copy()).requires_grad_(True)
                  for k in ("W1", "b1", "W2", "b2")]
            scores = F.relu(torch.from_numpy(X) @ tp[0] + tp[1]) @ tp[2] + tp[3]
            tl = F.cross_entropy(scores, torch.from_numpy(y))
            tg = torch.autograd.grad(tl, tp)
            loss, grads = step(params, X, y, 0.0)
            tl = tl.item()
            ok = bool(np.isclose(float(loss), tl, rtol=1e-4))
            det = [f"loss {float(loss):.6g} vs torch {tl:.6g}"]
            for k, t in zip(("W1", "b1", "W2", "b2"), tg):
                o, d = close_enough(np.asarray(grads[k]), t.numpy())
                ok &= o
                det.append(f"d{k}: {d}")
            return ok, "; ".join(det)

        ck.run("mlp2 f32 vs torch autograd", f_mlp_t)

    print()
    print(f"check: {ck.ok} ok, {len(ck.failed)} mismatched, {len(ck.skipped)} skipped")
    if ck.failed:
        print("MISMATCH in: " + "; ".join(ck.failed), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------


def run_demo(argv: list[str]) -> int:
    try:
        spec = importlib.util.find_spec("matgrad._demo")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        print("matgrad demo: the demo (matgrad._demo) is not part of this build.",
              file=sys.stderr)
        return EXIT_USAGE
    demo = importlib.import_module("matgrad._demo")
    rc = demo.main(argv)
    return int(rc or 0)
