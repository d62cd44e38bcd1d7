"""The bench's cases: what is timed, at which shapes, and the check each runs first.

A case's inputs are made only when it runs (``Case.build``), so a filtered run allocates
only what it times.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import reference as ref
from .._shapes import matmul_shapes
from .compare import check_grads, check_mlp2, close_enough, close_to_bf16

QUICK_SIZES = (64, 128, 256, 512, 1024)
FULL_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)
LINEAR_SHAPES = ((64, 784, 256), (256, 1024, 1024), (512, 768, 3072), (2048, 1024, 1024))
QUICK_LINEAR_SHAPES = LINEAR_SHAPES[:2]
#: Small squares, below the sizes above.
SMALL_SIZES = (2, 4, 8, 16, 32)
#: Vector, thin, batched and broadcast products: (label, shape of a, shape of b).
SHAPED = (
    ("mat@vec", (1024, 1024), (1024,)),
    ("mat@vec", (4096, 4096), (4096,)),
    ("vec@mat", (1024,), (1024, 1024)),
    ("vec@vec", (1024,), (1024,)),
    ("thin", (1024, 1024), (1024, 4)),
    ("thin", (8, 4096), (4096, 8)),
    ("thin", (4, 1024), (1024, 1024)),
    ("batched", (1000, 4, 4), (1000, 4, 4)),
    ("batched", (256, 16, 16), (256, 16, 16)),
    ("batched", (64, 32, 32), (64, 32, 32)),
    ("broadcast", (64, 32, 32), (32, 32)),
)
QUICK_SHAPED = (SHAPED[0], SHAPED[2], SHAPED[3], SHAPED[5], SHAPED[7], SHAPED[10])
#: Sizes of the float32 products at precision "high" and "medium".
PRECISION_SIZES = (1024, 2048, 4096)
#: The linear layer at the batches of inference: (batch, in, out).
SMALL_BATCH_SHAPES = ((1, 784, 256), (8, 784, 256))
#: Device-resident products under ``--device gpu`` (the quick run takes the first two).
RESIDENT_SIZES = (1024, 2048, 4096, 8192)
#: Flops past which a software adapter (lavapipe, a few GFLOP/s) skips a device-resident case.
SOFTWARE_ADAPTER_FLOPS = 2.0 * 1024**3
#: Flops a device-resident sample queues at least (products per sample: this over one's flops).
RESIDENT_SAMPLE_FLOPS = 2e11

#: What a case's build returns: the implementations to time and the check to run first.
Built = tuple[ref.Impls, Callable[[], tuple[bool, str]]]


@dataclass
class Case:
    name: str
    op: str
    dtype: str
    shape: str
    #: abscissa for the plot
    x: float
    flops: float
    build: Callable[[], Built]
    small: bool = False
    notes: list = field(default_factory=list)


def _dims(shape: tuple) -> str:
    return "x".join(map(str, shape))


def _gpu_skips(ns, dt: np.dtype, precision: str | None = None) -> None:
    """Raises Skip for what matgrad.gpu does not compute by design (not a correctness failure)."""
    if getattr(ns, "__name__", "") != "matgrad.gpu":
        return
    if dt != np.float32:
        raise ref.Skip("the GPU path computes float32 only (by design)")
    if precision is not None:
        raise ref.Skip("the GPU path computes exact float32 only (no precision setting)")


def matmul_case(ns, torch, name: str, op: str, dtype, shape_a: tuple, shape_b: tuple, x: float,
                *, transposed: bool = False, small: bool = False, precision: str | None = None) -> Case:
    """``a @ b``; with ``transposed``, ``a`` and ``b`` are the transposes of C-ordered arrays."""
    dt = np.dtype(dtype)

    def build() -> Built:
        _gpu_skips(ns, dt, precision)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if transposed:
            a = ref.randn(rng, shape_a[::-1], dt).T
            b = ref.randn(rng, shape_b[::-1], dt).T
        else:
            a = ref.randn(rng, shape_a, dt)
            b = ref.randn(rng, shape_b, dt)
        impls = ref.matmul_impls(ns, torch, a, b, precision)
        if precision is not None:
            return impls, lambda: close_to_bf16(np.asarray(impls["matgrad"]()), a, b, precision)
        return impls, lambda: close_enough(np.asarray(impls["matgrad"]()), np.matmul(a, b))

    result = matmul_shapes("matmul", shape_a, shape_b).result
    flops = 2.0 * shape_a[-1] * math.prod(result)
    shape = f"{_dims(shape_a)} @ {_dims(shape_b)}" + (" (a.T, b.T)" if transposed else "")
    return Case(name, op, dt.name, shape, x, float(flops), build, small=small)


def linear_case(ns, torch, layout: str, shape: tuple, dtype=np.float32) -> Case:
    bsz, n_in, n_out = shape
    dt = np.dtype(dtype)

    def build() -> Built:
        _gpu_skips(ns, dt)
        x, w, b, _ = ref.linear_inputs(shape, layout, dt, seed=1)
        impls = ref.linear_impls(ns, torch, layout, x, w, b)
        return impls, lambda: close_enough(np.asarray(impls["matgrad"]()),
                                           ref.linear_numpy(x, w, b, layout))

    flops = 2.0 * bsz * n_in * n_out + bsz * n_out
    return Case(f"linear[{layout}] {dt.name} {bsz}x{n_in}->{n_out}", f"linear[{layout}]",
                dt.name, f"{bsz}x{n_in}->{n_out}", flops, flops, build)


def linear_backward_case(ns, torch, layout: str, shape: tuple, dtype=np.float32) -> Case:
    bsz, n_in, n_out = shape
    dt = np.dtype(dtype)

    def build() -> Built:
        _gpu_skips(ns, dt)
        x, w, b, g = ref.linear_inputs(shape, layout, dt, seed=2)
        impls = ref.linear_backward_impls(ns, torch, layout, x, w, b, g)
        return impls, lambda: check_grads(impls["matgrad"](),
                                          ref.linear_grads_numpy(g, x, w, layout),
                                          ("grad_x", "grad_weight", "grad_bias"))

    flops = 4.0 * bsz * n_in * n_out + bsz * n_out
    return Case(f"linear_backward[{layout}] {dt.name} {bsz}x{n_in}->{n_out}",
                f"linear_backward[{layout}]", dt.name, f"{bsz}x{n_in}->{n_out}", flops, flops,
                build)


def matmul_backward_case(ns, torch, n: int, dtype=np.float32) -> Case:
    dt = np.dtype(dtype)

    def build() -> Built:
        _gpu_skips(ns, dt)
        rng = np.random.default_rng(3)
        a, b, g = (ref.randn(rng, (n, n), dt) for _ in range(3))
        impls = ref.matmul_backward_impls(ns, torch, a, b, g)
        return impls, lambda: check_grads(impls["matgrad"](), ref.matmul_backward_numpy(g, a, b),
                                          ("grad_a", "grad_b"))

    return Case(f"matmul_backward {dt.name} n={n}", "matmul_backward", dt.name, f"{n}x{n}x{n}",
                n, 4.0 * n**3, build)


def mlp2_case(ns, torch, dtype=np.float32) -> Case:
    n, d, h, c = ref.MLP_SHAPE
    dt = np.dtype(dtype)

    def build() -> Built:
        params, X, y = ref.mlp2_inputs(dt)
        impls = ref.mlp2_impls(ns, torch, params, X, y, 0.0)
        return impls, lambda: check_mlp2(impls["matgrad"](), params, X, y, 0.0)

    flops = ref.mlp2_flops()
    return Case(f"mlp2 step {dt.name} N={n} D={d} H={h} C={c}", "mlp2_step", dt.name,
                f"N={n} D={d} H={h} C={c}", flops, flops, build)


def torch_module_case(ns, torch, compiled: bool) -> Case:
    """A small MLP's training step of matgrad.torch.Linear layers against torch.nn.Linear ones."""
    n, d, h, c = ref.TORCH_MLP_SHAPE
    mode = "compiled" if compiled else "eager"

    def build() -> Built:
        if getattr(ns, "__name__", "") != "matgrad":
            raise ref.Skip("matgrad.torch runs on the CPU kernels only")
        impls = ref.torch_module_step_impls(torch, compiled)

        def check():
            grads = []
            for name in ("matgrad", "torch"):
                impls[name]()
                grads.append(tuple(p.grad.numpy().copy() for p in impls[name].model.parameters()))
            return check_grads(grads[0], grads[1], ("W1", "b1", "W2", "b2"))

        return impls, check

    flops = ref.torch_module_flops()
    return Case(f"torch.nn step {mode} float32 {d}-{h}-{c} N={n}", f"torch_module_step[{mode}]", "float32",
                f"N={n} D={d} H={h} C={c}", flops, flops, build)


def resident_case(gpu, torch, op: str, shape: tuple, layout: str = "out_in") -> Case:
    """``op`` on operands already on the device: matgrad.gpu's queued products, apart from
    transfers, against torch on CUDA (TF32 off) where there is one. The check reads back."""
    if op == "matmul":
        n = shape[0]
        flops, x, name, dims = 2.0 * n**3, n, f"matmul device-resident float32 n={n}", f"{n}x{n}x{n}"
    else:
        bsz, n_in, n_out = shape
        flops = (2.0 if op == "linear" else 4.0) * bsz * n_in * n_out + bsz * n_out
        x, dims = flops, f"{bsz}x{n_in}->{n_out}"
        name = f"{op}[{layout}] device-resident float32 {dims}"

    def build() -> Built:
        info = gpu.adapter_info()
        software = info["device_type"] == "cpu"
        if software and flops > SOFTWARE_ADAPTER_FLOPS:
            raise ref.Skip(f"a software adapter ({info['name']}): too slow past {SOFTWARE_ADAPTER_FLOPS:.0e} flops")
        calls = 1 if software else max(1, int(RESIDENT_SAMPLE_FLOPS / flops))
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        if op == "matmul":
            a, b = ref.randn(rng, shape, np.float32), ref.randn(rng, shape, np.float32)
            impls = ref.resident_impls(gpu, torch, op, (a, b), calls)
            # The first rows suffice to catch a wrong kernel; all of C at 8192 is minutes here.
            return impls, lambda: close_enough(impls["matgrad"]().numpy()[:64], a[:64] @ b)
        x, w, b, g = ref.linear_inputs(shape, layout, np.float32, seed=4)
        if op == "linear":
            impls = ref.resident_impls(gpu, torch, op, (x, w, b), calls, layout)
            return impls, lambda: close_enough(impls["matgrad"]().numpy(), ref.linear_numpy(x, w, b, layout))
        impls = ref.resident_impls(gpu, torch, op, (g, x, w), calls, layout)
        return impls, lambda: check_grads(tuple(r.numpy() for r in impls["matgrad"]()),
                                          ref.linear_grads_numpy(g, x, w, layout),
                                          ("grad_x", "grad_weight", "grad_bias"))

    return Case(name, f"{op}[device-resident]", "float32", dims, x, flops, build)


def build_cases(ns: Any, torch: Any, quick: bool) -> list[Case]:
    """Every case of a run, in the order they run."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    shapes = QUICK_LINEAR_SHAPES if quick else LINEAR_SHAPES
    dtypes = [np.dtype(np.float32), np.dtype(np.float64)]
    cases: list[Case] = []
    for dt in dtypes:
        cases += [matmul_case(ns, torch, f"matmul {dt.name} n={n}", "matmul", dt, (n, n), (n, n), n)
                  for n in sizes]
    for dt in dtypes:
        cases.append(matmul_case(ns, torch, f"matmul a.T@b.T {dt.name} n=1024", "matmul[transposed]",
                                 dt, (1024, 1024), (1024, 1024), 1024, transposed=True))
    for dt in dtypes:
        cases += [matmul_case(ns, torch, f"matmul small {dt.name} n={n}", "matmul[small]", dt, (n, n), (n, n), n,
                              small=True) for n in (SMALL_SIZES[1::2] if quick else SMALL_SIZES)]
    for dt in dtypes:
        for label, sa, sb in QUICK_SHAPED if quick else SHAPED:
            shape = "x".join(map(str, sa)) + "@" + "x".join(map(str, sb))
            cases.append(matmul_case(ns, torch, f"matmul {label} {dt.name} {shape}", f"matmul[{label}]", dt, sa, sb,
                                     sa[-1], small=True))
    for layout in ("out_in", "in_out"):
        cases += [linear_case(ns, torch, layout, shape) for shape in SMALL_BATCH_SHAPES + shapes]
    for layout in ("out_in", "in_out"):
        cases += [linear_backward_case(ns, torch, layout, shape) for shape in SMALL_BATCH_SHAPES + shapes]
    for precision in ("medium", "high"):
        cases += [matmul_case(ns, torch, f"matmul[{precision}] float32 n={n}", f"matmul[{precision}]", np.float32,
                              (n, n), (n, n), n, precision=precision) for n in (PRECISION_SIZES[:1] if quick else PRECISION_SIZES)]
    cases += [matmul_backward_case(ns, torch, n) for n in ((64, 1024) if quick else (8, 64, 1024))]
    cases.append(mlp2_case(ns, torch))
    cases += [torch_module_case(ns, torch, compiled) for compiled in ((False,) if quick else (False, True))]
    if getattr(ns, "__name__", "") == "matgrad.gpu":
        cases += [resident_case(ns, torch, "matmul", (n, n)) for n in (RESIDENT_SIZES[:2] if quick else RESIDENT_SIZES)]
        for op in ("linear", "linear_backward"):
            cases += [resident_case(ns, torch, op, shape) for shape in shapes]
    return cases
