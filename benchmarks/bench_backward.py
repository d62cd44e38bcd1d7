"""matmul_backward against NumPy and torch autograd (the MLP step is in bench_mlp.py)."""

from __future__ import annotations

import numpy as np

from . import IMPLS, gflops, need, rand, torch_grad_fn, torch_module


class MatmulBackward:
    """``(g @ b.T, a.T @ g)`` for ``y = a @ b`` with n x n inputs."""

    params = (IMPLS, ["float32", "float64"], [256, 1024])
    param_names = ["impl", "dtype", "n"]
    timeout = 300

    def setup(self, impl, dtype, n):
        a, b, g = rand((n, n), dtype, 0), rand((n, n), dtype, 1), rand((n, n), dtype, 2)
        if impl == "matgrad":
            mb = need("matmul_backward")
            self.fn = lambda: mb(g, a, b)
        elif impl == "numpy":
            self.fn = lambda: (g @ b.T, a.T @ g)
        else:
            torch = torch_module()
            self.fn = torch_grad_fn(torch.matmul, (a, b), g)
        self.flops = 4.0 * n**3

    def time_matmul_backward(self, impl, dtype, n):
        self.fn()

    def track_gflops(self, impl, dtype, n):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"
