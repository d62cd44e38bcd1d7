"""``python -m matgrad check``: the build's version, kernel, threads and GPU, and its results
against NumPy (and torch autograd when installed) on a handful of random cases.

A quick self-test for a user's installation, not a test suite: tests/ holds that.
"""

from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from . import reference as ref
from .compare import check_grads, check_mlp2, close_enough
from .env import cpu_model, gpu_status, import_torch
from .outcomes import EXIT_FAILED, EXIT_OK

MATMUL_CASES = [
    ((64, 48), (48, 32), "contiguous"),
    ((257, 300), (300, 129), "contiguous"),
    ((1, 1), (1, 1), "contiguous"),
    ((33, 65), (65, 17), "transposed"),
    ((20, 31), (31, 12), "strided"),
    ((5,), (5, 3), "contiguous"),
    ((4, 5), (5,), "contiguous"),
    ((7,), (7,), "contiguous"),
    ((3, 17, 9), (3, 9, 11), "contiguous"),
    ((2, 1, 7, 5), (3, 5, 4), "contiguous"),
    ((0, 5), (5, 3), "contiguous"),
    ((4, 0), (0, 3), "contiguous"),
]


class Checker:
    """Runs checks, printing one line each, and counts the outcomes."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed: list[str] = []

    def run(self, label: str, check: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = check()
        except Exception as exc:
            ok, detail = False, f"raised {type(exc).__name__}: {exc}"
        if ok:
            self.ok += 1
            print(f"  ok    {label}")
        else:
            self.failed.append(label)
            print(f"  FAIL  {label}: {detail}")


def _operands(rng, sa, sb, dtype, kind):
    if kind == "transposed":
        return ref.randn(rng, sa[::-1], dtype).T, ref.randn(rng, sb[::-1], dtype).T
    if kind == "strided":
        a = ref.randn(rng, tuple(2 * s for s in sa), dtype)[tuple(slice(None, None, 2) for _ in sa)]
        b = ref.randn(rng, tuple(2 * s for s in sb), dtype)[tuple(slice(1, None, 2) for _ in sb)]
        return a, b
    return ref.randn(rng, sa, dtype), ref.randn(rng, sb, dtype)


def _check_matmul(ck: Checker, mg, rng) -> None:
    print("matmul vs numpy.matmul")
    for dt in (np.float32, np.float64):
        for sa, sb, kind in MATMUL_CASES:
            a, b = _operands(rng, sa, sb, dt, kind)
            ck.run(f"matmul {np.dtype(dt).name} {sa}@{sb} {kind}",
                   lambda a=a, b=b: close_enough(np.asarray(mg.matmul(a, b)), np.matmul(a, b)))

    def with_out():
        a, b = ref.randn(rng, (40, 30), np.float32), ref.randn(rng, (30, 20), np.float32)
        out = np.empty((40, 20), np.float32)
        if mg.matmul(a, b, out=out) is not out:
            return False, "out= given but the returned array is not `out`"
        return close_enough(out, a @ b)

    ck.run("matmul f32 out= argument", with_out)
    a, b = ref.randn(rng, (6, 5), np.float32), ref.randn(rng, (5, 4), np.float64)
    ck.run("matmul f32@f64 promotes like numpy", lambda: close_enough(mg.matmul(a, b), a @ b))
    ia, ib = rng.integers(-5, 5, (6, 5)), rng.integers(-5, 5, (5, 4))
    ck.run("matmul int64 (numpy semantics)", lambda: close_enough(mg.matmul(ia, ib), ia @ ib))


def _check_matmul_backward(ck: Checker, mg, torch, rng) -> None:
    print("matmul_backward vs numpy" + (" and torch autograd" if torch is not None else ""))
    names = ("grad_a", "grad_b")
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        a, b = ref.randn(rng, (37, 53), dt), ref.randn(rng, (53, 29), dt)
        g = ref.randn(rng, (37, 29), dt)
        want = ref.matmul_backward_numpy(g, a, b)
        ck.run(f"matmul_backward {dn} (37,53)@(53,29) vs numpy",
               lambda a=a, b=b, g=g, want=want: check_grads(mg.matmul_backward(g, a, b), want, names))

        def flags(a=a, b=b, g=g, want=want):
            ok1, d1 = check_grads(mg.matmul_backward(g, a, b, grad_a=False), (None, want[1]), names)
            ok2, d2 = check_grads(mg.matmul_backward(g, a, b, grad_b=False), (want[0], None), names)
            return ok1 and ok2, f"grad_a=False: {d1} | grad_b=False: {d2}"

        ck.run(f"matmul_backward {dn} grad_a/grad_b=False give None", flags)
        if torch is not None:
            def against_torch(a=a, b=b, g=g):
                ta = torch.from_numpy(a.copy()).requires_grad_(True)
                tb = torch.from_numpy(b.copy()).requires_grad_(True)
                grads = torch.autograd.grad(ta @ tb, (ta, tb), torch.from_numpy(g))
                return check_grads(mg.matmul_backward(g, a, b), tuple(t.numpy() for t in grads), names)

            ck.run(f"matmul_backward {dn} vs torch autograd", against_torch)


def _check_linear(ck: Checker, mg, torch, rng) -> None:
    print("linear / linear_backward vs numpy" + (" and torch" if torch is not None else ""))
    names = ("grad_x", "grad_weight", "grad_bias")
    for dt in (np.float32, np.float64):
        dn = np.dtype(dt).name
        for layout in ("in_out", "out_in"):
            x, w, b, g = ref.linear_inputs((19, 45, 23), layout, dt, seed=int(rng.integers(1 << 30)))
            for bias in (b, None):
                ck.run(f"linear[{layout}] {dn} bias={bias is not None}",
                       lambda bias=bias, x=x, w=w, layout=layout: close_enough(
                           np.asarray(mg.linear(x, w, bias, weight_layout=layout)),
                           ref.linear_numpy(x, w, bias, layout)))
            want = ref.linear_grads_numpy(g, x, w, layout)
            ck.run(f"linear_backward[{layout}] {dn} vs numpy",
                   lambda x=x, w=w, g=g, layout=layout, want=want: check_grads(
                       mg.linear_backward(g, x, w, weight_layout=layout), want, names))
            ck.run(f"linear_backward[{layout}] {dn} grad_x/grad_bias=False",
                   lambda x=x, w=w, g=g, layout=layout, want=want: check_grads(
                       mg.linear_backward(g, x, w, weight_layout=layout, grad_x=False,
                                          grad_bias=False), (None, want[1], None), names))
            if torch is not None:
                def against_torch(x=x, w=w, b=b, g=g, layout=layout):
                    tx, tw, tb = (torch.from_numpy(v.copy()).requires_grad_(True) for v in (x, w, b))
                    F = torch.nn.functional
                    ty = F.linear(tx, tw, tb) if layout == "out_in" else torch.addmm(tb, tx, tw)
                    ok1, d1 = close_enough(np.asarray(mg.linear(x, w, b, weight_layout=layout)),
                                           ty.detach().numpy())
                    grads = torch.autograd.grad(ty, (tx, tw, tb), torch.from_numpy(g))
                    ok2, d2 = check_grads(mg.linear_backward(g, x, w, weight_layout=layout),
                                          tuple(t.numpy() for t in grads), names)
                    return ok1 and ok2, f"forward: {d1} | backward: {d2}"

                ck.run(f"linear[{layout}] {dn} fwd+bwd vs torch autograd", against_torch)


def _check_mlp2(ck: Checker, mg, torch) -> None:
    print("nn.mlp2_loss_and_grads vs numpy" + (" and torch" if torch is not None else ""))
    step = mg.nn.mlp2_loss_and_grads
    for reg in (0.0, 0.05):
        params, X, y = ref.mlp2_inputs(np.float64, (16, 12, 20, 5), seed=7)
        ck.run(f"mlp2 f64 reg={reg}",
               lambda reg=reg, p=params, X=X, y=y: check_mlp2(step(p, X, y, reg), p, X, y, reg))
    if torch is None:
        return

    def against_torch():
        params, X, y = ref.mlp2_inputs(np.float32, (16, 12, 20, 5), seed=8)
        tl, tg = ref.torch_mlp2_step(torch, params, X, y)()
        loss, grads = step(params, X, y, 0.0)
        ok = bool(np.isclose(float(loss), tl.item(), rtol=1e-4))
        details = [f"loss {float(loss):.6g} vs torch {tl.item():.6g}"]
        # torch's weights are (out, in): its gradients are the transposes of ours.
        for k, t in zip(("W1", "b1", "W2", "b2"), tg):
            o, d = close_enough(np.asarray(grads[k]), t.numpy().T)
            ok &= o
            details.append(f"d{k}: {d}")
        return ok, "; ".join(details)

    ck.run("mlp2 f32 vs torch autograd", against_torch)


def run_check(*, use_torch: bool = True, threads: int | None = None) -> int:
    import matgrad as mg  # noqa: PLC0415

    torch = import_torch(use_torch)
    if threads is not None:
        mg.set_num_threads(int(threads))
    gpu_ok, gpu_why = gpu_status()
    print(f"matgrad {mg.__version__}")
    print(f"  simd kernel       : {mg.simd_kernel()}")
    print(f"  available kernels : {', '.join(mg.available_kernels())}")
    print(f"  threads           : {mg.get_num_threads()}")
    print(f"  GPU               : {'yes' if gpu_ok else 'no'} ({gpu_why})")
    print(f"  numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch is not None else ", torch not installed"))
    print(f"  cpu               : {cpu_model()}")
    print()
    rng = np.random.default_rng(1234)
    ck = Checker()
    _check_matmul(ck, mg, rng)
    _check_matmul_backward(ck, mg, torch, rng)
    _check_linear(ck, mg, torch, rng)
    _check_mlp2(ck, mg, torch)
    print()
    print(f"check: {ck.ok} ok, {len(ck.failed)} mismatched")
    if ck.failed:
        print("MISMATCH in: " + "; ".join(ck.failed), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
