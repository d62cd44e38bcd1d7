"""asv suite: float32 matmul on the GPU (matgrad.gpu) against the CPU GEMM (matgrad.matmul).

Paths: "gpu" times device-resident products alone (operands uploaded once, the product queued,
then ``gpu.synchronize()``: no transfer timed); "gpu_readback" adds reading C back;
"gpu_roundtrip" takes host arrays in and out. Skipped, via NotImplementedError in setup,
without an adapter, and past n = 1024 on a software adapter (lavapipe: minutes per product).
"""

import numpy as np

from . import skip_large

#: Past this n a software adapter is not timed (minutes per product).
SOFTWARE_ADAPTER_MAX_N = 1024


class GpuMatmul:
    params = ([128, 512, 1024, 2048, 4096, 8192], ["gpu", "gpu_readback", "gpu_roundtrip", "cpu"])
    param_names = ["n", "path"]
    timeout = 300

    def setup(self, n, path):
        import matgrad
        from matgrad import gpu

        skip_large(n)
        if path != "cpu":
            if not gpu.is_available():
                raise NotImplementedError("no GPU adapter")
            info = gpu.adapter_info()
            if info["device_type"] == "cpu" and n > SOFTWARE_ADAPTER_MAX_N:
                raise NotImplementedError(f"software adapter {info['name']}: too slow past n = {SOFTWARE_ADAPTER_MAX_N}")
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((n, n)).astype(np.float32)
        self.b = rng.standard_normal((n, n)).astype(np.float32)
        self.matgrad, self.gpu = matgrad, gpu
        if path in ("gpu", "gpu_readback"):
            self.da, self.db = gpu.asarray(self.a), gpu.asarray(self.b)
            gpu.matmul(self.da, self.db).numpy()  # compile and warm up

    def time_matmul(self, n, path):
        if path == "gpu":
            self.gpu.matmul(self.da, self.db)
            self.gpu.synchronize()
        elif path == "gpu_readback":
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
