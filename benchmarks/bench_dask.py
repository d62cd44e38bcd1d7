"""``matgrad.dask.matmul`` against ``dask.array.matmul`` (NumPy blocks) on a
``distributed.LocalCluster`` of two one-thread worker processes: the same chunks (2048², or
half of n for the small case), operands persisted on the workers before timing; a timed call
materialises the whole product on the workers. Also the graph's task count (the operands'
own tasks excluded) and the cluster's peak process memory during one product. Skipped
(NotImplementedError) without the ``matgrad[dask]`` extra; n >= 4096 skipped under
``MATGRAD_ASV_SKIP_LARGE``.
"""

from __future__ import annotations

import numpy as np

from . import matgrad_module, skip_large

CHUNK = 2048


class DaskMatmul:
    params = (["matgrad.dask", "dask.array"], ["float32", "float64"], [2048, 8192, 16384])
    param_names = ["impl", "dtype", "n"]
    timeout = 900
    number = 1
    repeat = (1, 3, 600.0)

    def setup(self, impl, dtype, n):
        skip_large(n)
        matgrad_module()
        try:
            import dask.array as da
            from distributed import Client, LocalCluster, wait
            import matgrad.dask as md
        except ImportError as exc:
            raise NotImplementedError(f"dask is not available: {exc!r}") from exc
        self.wait = wait
        self.cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
        self.client = Client(self.cluster)
        chunk = min(CHUNK, n // 2)
        rng = da.random.default_rng(n)
        self.A = rng.standard_normal((n, n), chunks=chunk, dtype=np.dtype(dtype)).persist()
        self.B = rng.standard_normal((n, n), chunks=chunk, dtype=np.dtype(dtype)).persist()
        wait([self.A, self.B])
        self.product = md.matmul if impl == "matgrad.dask" else da.matmul

    def teardown(self, impl, dtype, n):
        # (asv tears down after a skipping setup too, before there is a cluster)
        if getattr(self, "client", None) is not None:
            self.client.close()
            self.cluster.close()

    def _run(self):
        C = self.product(self.A, self.B).persist()
        self.wait(C)
        del C

    def time_matmul(self, impl, dtype, n):
        self._run()

    def track_tasks(self, impl, dtype, n):
        from matgrad.bench.cluster import task_count

        return task_count(self.product(self.A, self.B), self.A, self.B)

    track_tasks.unit = "tasks"

    def track_peak_memory(self, impl, dtype, n):
        from distributed.diagnostics import MemorySampler

        sampler = MemorySampler()
        with sampler.sample("product", measure="process", interval=0.1):
            self._run()
        return max(v for _, v in sampler.samples["product"])

    track_peak_memory.unit = "bytes"
