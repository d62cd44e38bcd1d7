"""matmul: square sizes, transposed views, small and batched; peak memory; GFLOP/s."""

from __future__ import annotations

import os
import sys

import numpy as np

from . import IMPLS, IMPLS_NO_TORCH, gflops, impl_fn, matgrad_module, rand, skip_large

SIZES = [64, 128, 256, 512, 1024, 2048, 4096]


class Matmul:
    """``a @ b`` for square n x n inputs; ``layout="transposed"`` passes ``a.T, b.T``
    of C-contiguous arrays (F-ordered views).  torch is compared in
    ``MatmulSmall`` and ``TrackMatmulGflops``."""

    params = (IMPLS_NO_TORCH, ["float32", "float64"], SIZES, ["contiguous", "transposed"])
    param_names = ["impl", "dtype", "n", "layout"]
    timeout = 600
    repeat = (1, 10, 20.0)  # at most ~20 s of samples for the biggest sizes
    warmup_time = 0.1

    def setup(self, impl, dtype, n, layout):
        skip_large(n)
        if layout == "transposed":
            a = rand((n, n), dtype, 0).T
            b = rand((n, n), dtype, 1).T
        else:
            a = rand((n, n), dtype, 0)
            b = rand((n, n), dtype, 1)
        self.fn = impl_fn(impl, "matmul_impls", a, b)

    def time_matmul(self, impl, dtype, n, layout):
        self.fn()


def _kernels() -> list:
    import matgrad

    return matgrad.available_kernels()


class MatmulPerKernel:
    """GFLOP/s of every kernel this CPU runs (``MATGRAD_KERNEL``'s choices), n = 512: the
    other benchmarks only see the fastest, so a slow path would otherwise go unnoticed."""

    params = (_kernels(), ["float32", "float64"])
    param_names = ["kernel", "dtype"]
    unit = "GFLOP/s"

    def setup(self, kernel, dtype):
        import matgrad

        self.matgrad = matgrad
        self.a, self.b = rand((512, 512), dtype, 0), rand((512, 512), dtype, 1)

    def track_gflops_per_kernel(self, kernel, dtype):
        from matgrad import _matgrad

        active = self.matgrad.simd_kernel()
        _matgrad.force_kernel(kernel)
        try:
            return gflops(lambda: self.matgrad.matmul(self.a, self.b), 2 * 512**3)
        finally:
            _matgrad.force_kernel(active)


def _shaped_cases() -> dict:
    """The small, vector, thin, batched and broadcast products of ``python -m matgrad bench``
    (matgrad.bench.cases), by label: "n=16", "mat@vec 1024x1024@1024", ..."""
    from matgrad.bench import cases

    shaped = {f"n={n}": ((n, n), (n, n)) for n in cases.SMALL_SIZES}
    for label, sa, sb in cases.SHAPED:
        shaped[f"{label} " + "x".join(map(str, sa)) + "@" + "x".join(map(str, sb))] = (sa, sb)
    return shaped


SHAPED = _shaped_cases()


class MatmulSmall:
    """Call overhead and the small-product paths: small squares, vector, thin, batched and
    broadcast products (torch is compared in ``python -m matgrad bench``)."""

    params = (IMPLS_NO_TORCH, ["float32", "float64"], list(SHAPED))
    param_names = ["impl", "dtype", "case"]

    def setup(self, impl, dtype, case):
        sa, sb = SHAPED[case]
        self.fn = impl_fn(impl, "matmul_impls", rand(sa, dtype, 0), rand(sb, dtype, 1))

    def time_matmul_small(self, impl, dtype, case):
        self.fn()


def _vm_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise NotImplementedError(f"{field} not in /proc/self/status")


class PeakMemMatmul2048:
    """Peak memory of one 2048 x 2048 float32 matmul.

    ``peakmem_matmul`` is asv's whole-process peak RSS (interpreter, NumPy,
    the two 16 MiB inputs and whatever the call allocates).  The ``track_``
    figures isolate the call itself: the peak RSS high-water mark is reset
    (Linux ``/proc/self/clear_refs``) just before the call, and the growth is
    reported in MiB minus the 16 MiB output (``out=None``) -- i.e. the memory
    beyond the result: packing buffers and temporaries.  With ``out=`` given
    the output is preallocated and the figure is the whole extra allocation.
    """

    params = (["matgrad", "numpy"],)
    param_names = ["impl"]
    N = 2048
    timeout = 120

    def setup(self, impl):
        self.a = rand((self.N, self.N), np.float32, 0)
        self.b = rand((self.N, self.N), np.float32, 1)
        self.out = np.empty((self.N, self.N), np.float32)
        self.out.fill(0)  # touch the pages so they count before the reset
        if impl == "matgrad":
            self.mm = matgrad_module().matmul
        else:
            self.mm = np.matmul

    def peakmem_matmul(self, impl):
        self.mm(self.a, self.b)

    def _extra_mib(self, use_out: bool, warm: bool) -> float:
        if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/clear_refs"):
            raise NotImplementedError("needs Linux /proc/self/clear_refs")
        if warm:
            self.mm(self.a, self.b, out=self.out)
        rss0 = _vm_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
        except OSError as exc:
            raise NotImplementedError(f"cannot reset the RSS high-water mark: {exc}") from exc
        if use_out:
            self.mm(self.a, self.b, out=self.out)
            res_kib = 0
        else:
            res = self.mm(self.a, self.b)
            res_kib = res.nbytes // 1024
            del res
        hwm = _vm_kib("VmHWM")
        return max(0.0, (hwm - rss0 - res_kib) / 1024.0)

    def track_extra_mib_first_call(self, impl):
        """Memory beyond the output on the process's first call (cold buffers)."""
        return self._extra_mib(use_out=False, warm=False)

    track_extra_mib_first_call.unit = "MiB"

    def track_extra_mib_out(self, impl):
        """Memory beyond a preallocated ``out=`` on a warm call."""
        return self._extra_mib(use_out=True, warm=True)

    track_extra_mib_out.unit = "MiB"


class TrackMatmulGflops:
    """GFLOP/s of square matmul (median of >= 3 calls / 0.2 s), for graphs in GFLOP/s."""

    params = (IMPLS, ["float32", "float64"], [256, 1024])
    param_names = ["impl", "dtype", "n"]
    timeout = 120

    def setup(self, impl, dtype, n):
        self.fn = impl_fn(impl, "matmul_impls", rand((n, n), dtype, 0), rand((n, n), dtype, 1))
        self.flops = 2.0 * n**3

    def track_gflops(self, impl, dtype, n):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"
