"""One SGD training step of the two-layer ReLU MLP with softmax cross-entropy and L2:
``matgrad.nn.mlp2_loss_and_grads`` against the same step in torch.

Shape N=256, D=784, H=1024, C=10 (MNIST-sized input), float32, reg=1e-4. A step is the
forward pass, the loss and all four parameter gradients (no parameter update):

* matgrad: ``mlp2_loss_and_grads(params, X, y, reg)`` (weights (in, out); the ReLU is the
  fused epilogue of the first GEMM, the bias gradients are summed while packing).
* torch: ``F.linear`` -> ``F.relu`` -> ``F.linear`` -> ``F.cross_entropy`` + ``reg *
  (ΣW1² + ΣW2²)``, then ``torch.autograd.grad`` (weights in torch's (out, in) layout), with
  ``torch.set_num_threads(matgrad.get_num_threads())`` (see ``benchmarks.torch_module``).

torch is optional: without it the torch cases are skipped (``NotImplementedError`` in
``setup``), as is matgrad's case on a build without ``matgrad.nn``.
"""

from __future__ import annotations

import math

import numpy as np

from . import gflops, need, rand, torch_module

N, D, H, C = 256, 784, 1024, 10
REG = 1e-4
# Forward: 2N(DH + HC); backward: dW2 and dH1 (2 * 2NHC) and dW1 (2NDH); dX is not needed.
FLOPS = 2.0 * N * (D * H + H * C) + 2.0 * N * (D * H + 2 * H * C)


def _inputs():
    params = {
        "W1": rand((D, H), np.float32, 10, math.sqrt(2.0 / D)),
        "b1": rand((H,), np.float32, 11, 0.1),
        "W2": rand((H, C), np.float32, 12, 1.0 / math.sqrt(H)),
        "b2": rand((C,), np.float32, 13, 0.1),
    }
    X = rand((N, D), np.float32, 14)
    y = np.random.default_rng(15).integers(0, C, N).astype(np.int64)
    return params, X, y


def _step_fn(impl: str):
    params, X, y = _inputs()
    if impl == "matgrad":
        step = need("nn.mlp2_loss_and_grads")
        return lambda: step(params, X, y, REG)
    if impl == "torch":
        torch = torch_module()
        F = torch.nn.functional
        # torch's own layout: weights (out, in), contiguous.
        tp = [torch.from_numpy(np.ascontiguousarray(params["W1"].T)).requires_grad_(True),
              torch.from_numpy(params["b1"].copy()).requires_grad_(True),
              torch.from_numpy(np.ascontiguousarray(params["W2"].T)).requires_grad_(True),
              torch.from_numpy(params["b2"].copy()).requires_grad_(True)]
        tX, ty = torch.from_numpy(X), torch.from_numpy(y)

        def torch_step():
            W1, b1, W2, b2 = tp
            scores = F.linear(F.relu(F.linear(tX, W1, b1)), W2, b2)
            loss = F.cross_entropy(scores, ty) + REG * (W1.pow(2).sum() + W2.pow(2).sum())
            return loss.item(), torch.autograd.grad(loss, tp)

        return torch_step
    raise ValueError(impl)


class MLP2TrainStep:
    """Forward + loss + backward of the 784-1024-10 MLP on a batch of 256, float32."""

    params = (["matgrad", "torch"],)
    param_names = ["impl"]
    timeout = 120

    def setup(self, impl):
        self.fn = _step_fn(impl)
        self.fn()  # warm-up (thread pools, first-touch of the buffers)

    def time_train_step(self, impl):
        self.fn()

    def track_gflops(self, impl):
        return gflops(self.fn, FLOPS)

    track_gflops.unit = "GFLOP/s"
