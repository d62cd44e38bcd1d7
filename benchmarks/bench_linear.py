"""linear and linear_backward, both weight layouts, against NumPy and torch.

``layout="out_in"`` is torch's layout (``Y = X W^T + b``, compared with
``torch.nn.functional.linear``); ``layout="in_out"`` is ``Y = X W + b``
(compared with ``x @ w + b`` and ``torch.addmm``).  torch's backward is timed
with ``torch.autograd.grad`` on a graph built once in ``setup`` (all three
gradients), so only the backward pass is measured.
"""

from __future__ import annotations

from . import IMPLS, gflops, impl_fn, parse_shape, reference, shape_label

SHAPES = [shape_label(s) for s in
          ((1, 784, 256), (8, 784, 256), (64, 784, 256), (256, 1024, 1024), (512, 768, 3072), (2048, 1024, 1024))]
LAYOUTS = ["out_in", "in_out"]


class LinearForward:
    params = (IMPLS, LAYOUTS, SHAPES)
    param_names = ["impl", "layout", "shape"]
    timeout = 300

    def setup(self, impl, layout, shape):
        x, w, b, _ = reference().linear_inputs(parse_shape(shape), layout)
        self.fn = impl_fn(impl, "linear_impls", layout, x, w, b)

    def time_linear(self, impl, layout, shape):
        self.fn()


class LinearBackward:
    params = (IMPLS, LAYOUTS, SHAPES)
    param_names = ["impl", "layout", "shape"]
    timeout = 300

    def setup(self, impl, layout, shape):
        x, w, b, g = reference().linear_inputs(parse_shape(shape), layout)
        self.fn = impl_fn(impl, "linear_backward_impls", layout, x, w, b, g)

    def time_linear_backward(self, impl, layout, shape):
        self.fn()


class TrackLinearGflops:
    """GFLOP/s of the linear layer at 256x1024->1024 (backward: all three grads)."""

    params = (IMPLS, LAYOUTS, ["forward", "backward"])
    param_names = ["impl", "layout", "pass"]
    timeout = 120

    def setup(self, impl, layout, pass_):
        shape = (256, 1024, 1024)
        x, w, b, g = reference().linear_inputs(shape, layout)
        bsz, n_in, n_out = shape
        if pass_ == "forward":
            self.fn = impl_fn(impl, "linear_impls", layout, x, w, b)
            self.flops = 2.0 * bsz * n_in * n_out + bsz * n_out
        else:
            self.fn = impl_fn(impl, "linear_backward_impls", layout, x, w, b, g)
            self.flops = 4.0 * bsz * n_in * n_out + bsz * n_out

    def track_gflops(self, impl, layout, pass_):
        return gflops(self.fn, self.flops)

    track_gflops.unit = "GFLOP/s"
