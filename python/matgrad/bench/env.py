"""What a run records about where it ran, and the thread counts it runs under."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
from typing import Any, Iterator

import numpy as np

from .outcomes import Skip


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def numpy_blas() -> str | None:
    """NumPy's BLAS and its version, as ``numpy.show_config`` reports them."""
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    except Exception:  # an unusual NumPy build: the field is informative only
        return None
    name, ver = blas.get("name"), blas.get("version")
    if not name:
        return None
    return f"{name} {ver}" if ver else name


def gpu_status() -> tuple[bool, str]:
    """Whether matgrad.gpu has a usable adapter, and a line saying which (or why not)."""
    from matgrad import gpu  # noqa: PLC0415  (opens no device until asked)

    try:
        if not gpu.is_available():
            return False, "no GPU adapter available"
        return True, f"GPU adapter available: {gpu.adapter_info()}"
    except Exception as exc:  # a driver problem must not crash the CLI
        return False, f"matgrad.gpu raised {exc!r}"


def metadata(mg, torch, threads: int | None, **extra: Any) -> dict:
    meta = {
        "matgrad_version": mg.__version__,
        "simd_kernel": mg.simd_kernel(),
        "available_kernels": list(mg.available_kernels()),
        "threads": threads,
        "numpy_version": np.__version__,
        "numpy_blas": numpy_blas(),
        "torch_version": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra)
    return meta


@contextlib.contextmanager
def pinned_threads(mg, torch, n: int | None) -> Iterator[int]:
    """Runs matgrad, torch and (with threadpoolctl) NumPy's BLAS on ``n`` threads, or all on
    matgrad's current count when ``n`` is None; yields the count and restores the others'."""
    if n is not None:
        mg.set_num_threads(int(n))
    n = mg.get_num_threads()
    torch_before = None
    if torch is not None:
        torch_before = torch.get_num_threads()
        torch.set_num_threads(n)
    limiter = None
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        limiter = threadpool_limits(limits=n, user_api="blas")
    except ImportError:
        pass
    try:
        yield n
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        if torch_before is not None:
            torch.set_num_threads(torch_before)


def import_torch(use_torch: bool = True):
    """torch, or None when not wanted or not importable."""
    if not use_torch:
        return None
    try:
        import torch  # noqa: PLC0415
    except Exception:  # not installed, or a broken install
        return None
    return torch


def gpu_namespace():
    """matgrad.gpu when an adapter is usable, else :class:`Skip` saying why."""
    ok, why = gpu_status()
    if not ok:
        raise Skip(why)
    from matgrad import gpu  # noqa: PLC0415

    return gpu
