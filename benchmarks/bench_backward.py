"""matmul_backward against NumPy and torch autograd (the MLP step is in bench_mlp.py)."""

from __future__ import annotations

from . import IMPLS, gflops, impl_fn, rand


class MatmulBackward:
    """``(g @ b.T, a.T @ g)`` for ``y = a @ b`` with n x n inputs."""

    params = (IMPLS, ["float32", "float64"], [8, 64, 256, 1024])
    param_names = ["impl", "dtype", "n"]
    timeout = 300

    def setup(self, impl, dtype, n):
        a, b, g = rand((n, n), dtype, 0), rand((n, n), dtype, 1), rand((n, n), dtype, 2)
        self.fn = impl_fn(impl, "matmul_backward_impls", a, b, g)
        self.flops = 4.0 * n**3

    def time_matmul_backward(self, impl, dtype, n):
        self.fn()

    def track_gflops(self, impl, dtype, n):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"
