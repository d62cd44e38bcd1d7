"""One training step of the two-layer ReLU MLP with softmax cross-entropy and L2:
``matgrad.nn.mlp2_loss_and_grads`` against the same step in torch (weights in torch's own
layout, F.linear, F.cross_entropy and autograd), both from the package's catalogue
(:func:`matgrad.bench.reference.mlp2_impls`).

Shape N=256, D=784, H=1024, C=10 (an MNIST-sized input), float32, reg=1e-4. A step is the
forward pass, the loss and all four parameter gradients (no parameter update).
"""

from __future__ import annotations

import numpy as np

from . import gflops, impl_fn, reference, torch_module

REG = 1e-4


class MLP2TrainStep:
    """Forward + loss + backward of the 784-1024-10 MLP on a batch of 256, float32."""

    params = (["matgrad", "torch"],)
    param_names = ["impl"]
    timeout = 120

    def setup(self, impl):
        ref = reference()
        params, X, y = ref.mlp2_inputs(np.float32)
        self.fn = impl_fn(impl, "mlp2_impls", params, X, y, REG)
        self.flops = ref.mlp2_flops()
        self.fn()  # warm-up (thread pools, first-touch of the buffers)

    def time_train_step(self, impl):
        self.fn()

    def track_gflops(self, impl):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"


class TorchModuleStep:
    """A training step of Linear(784, 256) → ReLU → Linear(256, 10) at batch 256, float32:
    ``matgrad.torch.Linear`` layers against ``torch.nn.Linear`` ones, eager and under
    ``torch.compile`` (compiled cases skipped under MATGRAD_ASV_SKIP_LARGE: inductor's first
    compile takes tens of seconds on 2 cores)."""

    params = (["matgrad", "torch"], ["eager", "compiled"])
    param_names = ["impl", "mode"]
    timeout = 300

    def setup(self, impl, mode):
        import os

        if mode == "compiled" and os.environ.get("MATGRAD_ASV_SKIP_LARGE"):
            raise NotImplementedError("compiled step skipped (MATGRAD_ASV_SKIP_LARGE is set)")
        ref = reference()
        self.fn = ref.torch_module_step_impls(torch_module(), mode == "compiled")[impl]
        self.flops = ref.torch_module_flops()
        self.fn()  # warm-up (and the compile)

    def time_train_step(self, impl, mode):
        self.fn()

    def track_gflops(self, impl, mode):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"
