"""asv suite: float32 matmul on the GPU (matgrad.gpu, device-resident operands) against the
CPU GEMM (matgrad.matmul). Skipped, via NotImplementedError in setup, without an adapter."""

import numpy as np


class GpuMatmul:
    params = ([128, 512, 1024], ["gpu", "gpu_roundtrip", "cpu"])
    param_names = ["n", "path"]

    def setup(self, n, path):
        import matgrad
        from matgrad import gpu

        if path != "cpu" and not gpu.is_available():
            raise NotImplementedError("no GPU adapter")
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((n, n)).astype(np.float32)
        self.b = rng.standard_normal((n, n)).astype(np.float32)
        self.matgrad, self.gpu = matgrad, gpu
        if path == "gpu":
            self.da, self.db = gpu.asarray(self.a), gpu.asarray(self.b)
            gpu.matmul(self.da, self.db).numpy()  # compile and warm up

    def time_matmul(self, n, path):
        if path == "gpu":
            # Reading back one element's worth would still wait for the whole product: read
            # it all, which is what a caller ends with.
            self.gpu.matmul(self.da, self.db).numpy()
        elif path == "gpu_roundtrip":
            self.gpu.matmul(self.a, self.b)
        else:
            self.matgrad.matmul(self.a, self.b)

    def track_gflops(self, n, path):
        import time

        start = time.perf_counter()
        self.time_matmul(n, path)
        return 2 * n**3 / (time.perf_counter() - start) / 1e9

    track_gflops.unit = "GFLOP/s"
