"""Differential fuzzing of matgrad against NumPy and torch: the cases and how they are judged.

A case is a *plan* — shapes, dtypes, memory layouts, ``out=`` views, flags — drawn from a
:class:`Draws` source: hypothesis in the test suite (``test_fuzz.py``: shrinking, a replayable
failure) or a seeded NumPy generator in the long campaign (``fuzz_campaign.py``: fast, a
million cases). A plan is materialised twice, identically, once for each side, so that views
which alias each other (an ``out=`` over an input's memory) are the same on both.

Values are small integers, so every product and gradient is exact in every dtype here, in
any summation order: results are compared bit for bit, not within a tolerance, and any
indexing error shows. (The MLP step has a softmax and is compared within a bound.) Each
array lives in a buffer of its own (or shared, for aliasing) with guard bytes around it; the
whole buffers are compared afterwards, so a write outside an output, or into an input, shows.

Layouts drawn: C and F order, any permutation of the axes, gaps, negative and zero strides,
rows that overlap, non-native byte order, unaligned data, read-only arrays, empty dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence

import numpy as np

import matgrad
from matgrad import nn

GUARD = 16  # bytes of guard before and after every buffer


# ---------------------------------------------------------------------------------- sources


class Draws(Protocol):
    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""

    def choice(self, options: Sequence[Any]) -> Any:
        """One of ``options``; sources may prefer the first ones (hypothesis shrinks to them)."""


class RandomDraws:
    """Draws from a NumPy generator (the campaign)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]


class HypothesisDraws:
    """Draws from hypothesis's ``data`` (the test suite)."""

    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))

    def choice(self, options):
        return self.data.draw(self.st.sampled_from(list(options)))


def chance(d: Draws, percent: int) -> bool:
    return d.integer(0, 99) < percent


# ------------------------------------------------------------------------- arrays and plans


@dataclass(frozen=True)
class ArrayPlan:
    """One array: its shape, dtype (with byte order), strides in elements and where it lives."""

    shape: tuple
    dtype: str
    strides: tuple
    unaligned: bool = False
    readonly: bool = False
    seed: int = 0
    #: the name of the array whose buffer this one is a view into (None: a buffer of its own)
    shares: str | None = None
    #: offset in elements of element 0 from the lowest address the view reaches
    start: int = 0

    def span(self) -> int:
        """Elements between the lowest and highest address reached, plus one (for an empty
        array, what its other dimensions would reach)."""
        return 1 + sum(abs(s) * (n - 1) for s, n in zip(self.strides, self.shape) if n > 0)


SIZES = (0, 1, 1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33)
BIG_SIZES = (31, 48, 64, 65, 100)
FLOATS = ("float32", "float64")
OTHER_DTYPES = ("int32", "int64", "int8", "uint8", "float16", "bool", "complex64", "complex128")


def draw_size(d: Draws) -> int:
    return d.choice(BIG_SIZES) if chance(d, 8) else d.choice(SIZES)


def draw_dtype(d: Draws, float_bias: int = 85) -> str:
    return d.choice(FLOATS) if chance(d, float_bias) else d.choice(OTHER_DTYPES)


def draw_strides(d: Draws, shape: tuple, overlap_ok: bool) -> tuple:
    """Strides in elements: contiguous in some axis order (C first), with gaps and flips,
    and where ``overlap_ok`` zero strides and rows that overlap."""
    nd = len(shape)
    layout = d.choice(("C", "F", "permuted")) if nd >= 2 else "C"
    order = list(range(nd))[::-1]  # innermost first
    if layout == "F":
        order = order[::-1]
    elif layout == "permuted":
        order = sorted(order, key=lambda _: d.integer(0, 1000))
    strides = [0] * nd
    step = d.choice((1, 1, 2, 3)) if chance(d, 25) else 1
    for axis in order:
        strides[axis] = step
        step *= max(shape[axis], 1) * (d.choice((1, 2)) if chance(d, 20) else 1)
    for axis in range(nd):
        if chance(d, 15):
            strides[axis] = -strides[axis]
        if overlap_ok and chance(d, 6):
            strides[axis] = d.choice((0, 1, -1))  # broadcast, or rows overlapping
    return tuple(strides)


def draw_array(d: Draws, shape: tuple, dtype: str, *, overlap_ok: bool, output: bool = False) -> ArrayPlan:
    strides = draw_strides(d, shape, overlap_ok)
    byteswap = dtype not in ("int8", "uint8", "bool") and chance(d, 6)
    if byteswap:
        dtype = np.dtype(dtype).newbyteorder().str
    return ArrayPlan(
        shape=tuple(shape), dtype=dtype, strides=strides,
        unaligned=dtype not in ("int8", "uint8", "bool") and chance(d, 5),
        readonly=chance(d, 3 if output else 8),
        seed=d.integer(0, 2**31 - 1),
    )


def materialize(plans: dict[str, ArrayPlan | None], fill_output: set[str] = frozenset()):
    """The arrays of ``plans`` (name -> plan, None kept as None) and their buffers.

    Arrays filled with random small integers, except those named in ``fill_output``, filled
    with a sentinel (7). A plan that ``shares`` another's buffer is a view into it.
    """
    arrays: dict[str, Any] = {}
    buffers: dict[str, np.ndarray] = {}
    owners = [n for n, p in plans.items() if p is not None and p.shares is None]
    for name in owners:
        plan = plans[name]
        dt = np.dtype(plan.dtype)
        sharers = [p for p in plans.values() if p is not None and p.shares == name]
        count = max([plan.start + plan.span()] + [p.start + p.span() for p in sharers])
        pad = 1 if plan.unaligned else 0
        raw = np.zeros(GUARD + pad + count * dt.itemsize + GUARD, np.uint8)
        raw[:GUARD] = 0xA5
        raw[-GUARD:] = 0x5A
        typed = raw[GUARD + pad: GUARD + pad + count * dt.itemsize].view(dt)
        rng = np.random.default_rng(plan.seed)
        if name in fill_output:
            typed[...] = 7
        elif dt.kind == "b":
            typed[...] = rng.integers(0, 2, count).astype(bool)
        elif dt.kind == "u":
            typed[...] = rng.integers(0, 4, count)
        else:
            typed[...] = rng.integers(-3, 4, count)
        buffers[name] = raw
        for n, p in plans.items():
            if p is not None and (n == name or p.shares == name):
                arrays[n] = _view(raw, GUARD + pad, p, dt if n == name else np.dtype(p.dtype))
    for n, p in plans.items():
        if p is None:
            arrays[n] = None
        elif p.readonly:
            arrays[n].flags.writeable = False
    return arrays, buffers


def _view(raw: np.ndarray, first: int, plan: ArrayPlan, dt: np.dtype) -> np.ndarray:
    # Element 0 sits `start` elements past the lowest address plus what negative strides reach
    # below it; np.ndarray checks that every element lies inside the buffer.
    below = sum(-s * (n - 1) for s, n in zip(plan.strides, plan.shape) if s < 0 and n > 0)
    offset = first + (plan.start + below) * dt.itemsize
    return np.ndarray(plan.shape, dt, buffer=raw, offset=offset,
                      strides=tuple(s * dt.itemsize for s in plan.strides))


# -------------------------------------------------------------------------------- outcomes


def error_kind(e: BaseException) -> str:
    """The class of error a caller would catch: ValueError, TypeError, or the type's name."""
    for kind in (ValueError, TypeError, MemoryError):
        if isinstance(e, kind):
            return kind.__name__
    return type(e).__name__


@dataclass
class Outcome:
    error: str | None = None
    message: str = ""
    values: list = field(default_factory=list)  # results, as (type, dtype, shape, copy)
    identity: list = field(default_factory=list)  # which results are the out= array itself
    buffers: dict = field(default_factory=dict)  # name -> bytes after the call


def describe_value(v):
    if v is None:
        return ("None",)
    if isinstance(v, float) and not isinstance(v, np.floating):
        return ("float", v)
    arr = np.asarray(v)
    return (type(v).__name__, arr.dtype.str.lstrip("<>=|") if arr.dtype.kind != "O" else "O",
            arr.shape, arr.copy())


def run_side(fn: Callable, plans: dict, fill_output: set, outs: Sequence[str] = ()) -> Outcome:
    arrays, buffers = materialize(plans, fill_output)
    outcome = Outcome()
    try:
        results = fn(arrays)
    except Exception as e:  # noqa: BLE001 -- the kind of error is what is compared
        outcome.error, outcome.message = error_kind(e), f"{type(e).__name__}: {e}"
    else:
        results = results if isinstance(results, tuple) else (results,)
        outcome.values = [describe_value(r) for r in results]
        outcome.identity = [any(r is arrays[o] for o in outs if arrays.get(o) is not None) for r in results]
    outcome.buffers = {n: b.tobytes() for n, b in buffers.items()}
    return outcome


def same_values(x, y, exact: bool, rtol: float = 0.0) -> bool:
    if x[0] != y[0] or len(x) != len(y):
        return False
    if x[0] == "None":
        return True
    if x[0] == "float":
        return x[1] == y[1] or (not exact and abs(x[1] - y[1]) <= rtol * max(1.0, abs(y[1])))
    (_, dx, sx, vx), (_, dy, sy, vy) = x, y
    if dx != dy or sx != sy:
        return False
    if exact:
        return bool(np.array_equal(vx, vy, equal_nan=vx.dtype.kind in "fc"))
    scale = max(1.0, float(np.max(np.abs(vy)))) if vy.size else 1.0
    return bool(np.all(np.abs(vx.astype(np.float64) - vy.astype(np.float64)) <= rtol * scale))


class Disagreement(AssertionError):
    pass


def compare(what: str, plan: Any, got: Outcome, want: Outcome, *, exact: bool = True,
            rtol: float = 0.0, compare_buffers: bool = True) -> None:
    """Raises :class:`Disagreement` describing the case unless the two sides agree."""

    def fail(why: str):
        raise Disagreement(f"{what}: {why}\n  plan: {plan}\n  matgrad: {got.error or 'ok'} "
                           f"{got.message}\n  reference: {want.error or 'ok'} {want.message}")

    if got.error is None and want.error is None:
        if len(got.values) != len(want.values):
            fail("a different number of results")
        for i, (x, y) in enumerate(zip(got.values, want.values)):
            if not same_values(x, y, exact, rtol):
                fail(f"result {i} differs: {x[:3]} vs {y[:3]}\n{x[-1]!r}\nvs\n{y[-1]!r}")
        if got.identity != want.identity:
            fail(f"out= returned {got.identity} vs {want.identity}")
    elif got.error != want.error:
        fail(f"raised {got.error} where the reference {'raised ' + want.error if want.error else 'did not'}")
    if compare_buffers and got.buffers != want.buffers:
        bad = [n for n in got.buffers if got.buffers[n] != want.buffers[n]]
        fail(f"memory after the call differs in {bad}")


# ---------------------------------------------------------------------------------- matmul


@dataclass(frozen=True)
class MatmulPlan:
    arrays: dict
    precision_kw: bool


def draw_matmul(d: Draws) -> MatmulPlan:
    kind = d.choice(("matrix", "matrix", "batched", "vector_a", "vector_b", "vectors", "scalar"))
    m, k, n = draw_size(d), draw_size(d), draw_size(d)
    ka = kb = k
    if chance(d, 4):
        kb = d.choice(SIZES)  # a mismatch (or not)
    if kind == "batched":
        rank = d.integer(1, 3)
        batch = [d.choice((1, 1, 2, 3)) for _ in range(rank)]
        ba = [x if chance(d, 70) else 1 for x in batch][d.integer(0, rank):]
        bb = [x if chance(d, 70) else 1 for x in batch][d.integer(0, rank):]
        if chance(d, 4):
            bb = bb[:-1] + [d.choice((2, 4))] if bb else bb  # batch sizes that may not broadcast
        sa, sb = tuple(ba) + (m, ka), tuple(bb) + (kb, n)
        if chance(d, 30) and len(sa) > 2:
            sb = (kb, n)  # a matrix against a stack
    else:
        sa = {"vector_a": (ka,), "vectors": (ka,), "scalar": ()}.get(kind, (m, ka))
        sb = {"vector_b": (kb,), "vectors": (kb,), "scalar": (kb, n)}.get(kind, (kb, n))
    da = draw_dtype(d)
    db = da if chance(d, 80) else draw_dtype(d)
    arrays = {"a": draw_array(d, sa, da, overlap_ok=True), "b": draw_array(d, sb, db, overlap_ok=True)}
    out = None
    if chance(d, 35):
        try:
            shape = np.matmul(np.empty(sa, np.int8), np.empty(sb, np.int8)).shape
            dtype = np.result_type(np.dtype(da), np.dtype(db)).str
        except (ValueError, TypeError):
            shape, dtype = (m, n), "float64"
        if chance(d, 5) and shape:
            shape = shape[:-1] + (shape[-1] + 1,)  # the wrong shape
        if chance(d, 10):
            dtype = draw_dtype(d)
        out = draw_array(d, shape, np.dtype(dtype).name, overlap_ok=True, output=True)
        if chance(d, 15):
            # A view into an input's memory: NumPy computes as if the inputs were copied first.
            owner = d.choice(("a", "b"))
            if np.dtype(arrays[owner].dtype) == np.dtype(out.dtype):
                out = replace(out, shares=owner, start=d.integer(0, 8))
    arrays["out"] = out
    return MatmulPlan(arrays, precision_kw=chance(d, 10))


def check_matmul(plan: MatmulPlan) -> None:
    kw = {"precision": "highest"} if plan.precision_kw else {}

    def ours(x):
        if x["out"] is None:
            return matgrad.matmul(x["a"], x["b"], **kw)
        return matgrad.matmul(x["a"], x["b"], out=x["out"], **kw)

    def numpys(x):
        if x["out"] is None:
            return np.matmul(x["a"], x["b"])
        return np.matmul(x["a"], x["b"], out=x["out"])

    fill = {"out"} if plan.arrays["out"] is not None and plan.arrays["out"].shares is None else set()
    got = run_side(ours, plan.arrays, fill, outs=("out",))
    want = run_side(numpys, plan.arrays, fill, outs=("out",))
    if (plan.arrays["out"] is not None and got.error is None and want.error is None
            and _out_overlaps_itself(plan.arrays, fill)):
        # Where out's elements share memory, which product lands there depends on the order
        # of the writes, which NumPy does not define (its BLAS path, handed a zero stride,
        # writes nothing at all: OpenBLAS refuses incy = 0). The judge instead: every byte
        # of out holds one of the products written there, and nothing else changed.
        _check_last_writes(plan, got, fill)
        return
    compare("matmul", plan, got, want)


def _out_addresses(arrays: dict, buffers: dict, owner: str) -> np.ndarray:
    """The byte offset in its buffer of each element of ``out``, in C order."""
    out = arrays["out"]
    first = out.__array_interface__["data"][0] - buffers[owner].__array_interface__["data"][0]
    addresses = np.full(out.shape, first, np.int64)
    for axis, (n, stride) in enumerate(zip(out.shape, out.strides)):
        shape = [1] * out.ndim
        shape[axis] = n
        addresses = addresses + (np.arange(n, dtype=np.int64) * stride).reshape(shape)
    return addresses.ravel()


def _out_overlaps_itself(plans: dict, fill: set) -> bool:
    arrays, buffers = materialize(plans, fill)
    if arrays["out"].size == 0:
        return False
    owner = plans["out"].shares or "out"
    addresses = _out_addresses(arrays, buffers, owner)
    return len(np.unique(addresses)) < len(addresses)


def _check_last_writes(plan: MatmulPlan, got: Outcome, fill: set) -> None:
    arrays, buffers = materialize(plan.arrays, fill)
    owner = plan.arrays["out"].shares or "out"
    out = arrays["out"]
    exact = np.matmul(np.array(arrays["a"]), np.array(arrays["b"])).astype(out.dtype)
    addresses = _out_addresses(arrays, buffers, owner)
    after = np.frombuffer(got.buffers[owner], np.uint8)
    size = out.itemsize
    wanted = np.ascontiguousarray(exact.reshape(-1)).view(np.uint8).reshape(-1, size)
    landed = after[addresses[:, None] + np.arange(size)]
    matches = np.all(landed == wanted, axis=1)
    unique, which = np.unique(addresses, return_inverse=True)
    held = np.bincount(which.ravel(), weights=matches, minlength=len(unique)) > 0
    problems = []
    if not np.all(held):
        problems.append(f"{np.count_nonzero(~held)} elements of out hold none of the products written there")
    touched = np.zeros(len(after), bool)
    touched[(unique[:, None] + np.arange(size)).ravel()] = True
    before = np.frombuffer(buffers[owner].tobytes(), np.uint8)
    if np.any(after[~touched] != before[~touched]):
        problems.append("bytes outside out changed")
    for name, b in buffers.items():
        if name != owner and got.buffers[name] != b.tobytes():
            problems.append(f"the buffer of {name} changed")
    if got.identity != [True]:
        problems.append("out= was not returned")
    if problems:
        raise Disagreement(f"matmul (out overlapping itself): {'; '.join(problems)}\n  plan: {plan}")


# -------------------------------------------------------------------------------- gradients


def _float_result(*dtypes) -> np.dtype | None:
    dt = np.result_type(*[np.dtype(x) for x in dtypes])
    return dt if dt in (np.dtype(np.float32), np.dtype(np.float64)) else None


@dataclass(frozen=True)
class GradPlan:
    function: str  # "matmul_backward", "linear" or "linear_backward"
    arrays: dict
    options: tuple  # keyword arguments, as (name, value) pairs


def draw_matmul_backward(d: Draws) -> GradPlan:
    mm = draw_matmul(d)
    sa, sb = mm.arrays["a"].shape, mm.arrays["b"].shape
    try:
        shape = np.matmul(np.empty(sa, np.int8), np.empty(sb, np.int8)).shape
    except ValueError:
        shape = (draw_size(d), draw_size(d))
    if chance(d, 4) and shape:
        shape = shape[:-1] + (shape[-1] + 1,)
    dg = mm.arrays["a"].dtype if chance(d, 85) else draw_dtype(d)
    arrays = {"g": draw_array(d, shape, np.dtype(dg).name, overlap_ok=True), "a": mm.arrays["a"], "b": mm.arrays["b"]}
    options = tuple((name, d.choice((True, True, False, 0, None))) for name in ("grad_a", "grad_b") if chance(d, 30))
    return GradPlan("matmul_backward", arrays, options)


def draw_linear(d: Draws, backward: bool) -> GradPlan:
    n_in, n_out = draw_size(d), draw_size(d)
    lead = tuple(draw_size(d) for _ in range(d.choice((0, 1, 1, 1, 2))))
    layout = d.choice(("in_out", "out_in"))
    w_shape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
    x_shape = lead + (n_in if chance(d, 96) else n_in + 1,)
    dt = draw_dtype(d)
    other = lambda: dt if chance(d, 85) else draw_dtype(d)  # noqa: E731
    arrays = {"x": draw_array(d, x_shape, dt, overlap_ok=True), "w": draw_array(d, w_shape, other(), overlap_ok=True)}
    options = [("weight_layout", layout)] if layout == "out_in" or chance(d, 50) else []
    if backward:
        g_shape = lead + (n_out if chance(d, 96) else n_out + 1,)
        arrays["g"] = draw_array(d, g_shape, other(), overlap_ok=True)
        options += [(name, d.choice((True, False, 1, None))) for name in ("grad_x", "grad_weight", "grad_bias") if chance(d, 25)]
    else:
        bias = None
        if chance(d, 70):
            bias = draw_array(d, (n_out if chance(d, 96) else n_out + 1,), other(), overlap_ok=True)
        arrays["bias"] = bias
    return GradPlan("linear_backward" if backward else "linear", arrays, tuple(options))


def _torch_matmul_grads(g, a, b):
    import torch

    ta = torch.tensor(np.array(a, np.float64), requires_grad=True)
    tb = torch.tensor(np.array(b, np.float64), requires_grad=True)
    torch.matmul(ta, tb).backward(torch.tensor(np.array(g, np.float64)))
    return ta.grad.numpy(), tb.grad.numpy()


def reference_grads(plan: GradPlan, x: dict):
    """NumPy (and torch's autograd, for matmul_backward) in float64, cast to the result dtype;
    the errors matgrad's functions document where the inputs are bad."""
    opts = dict(plan.options)
    if plan.function == "matmul_backward":
        g, a, b = x["g"], x["a"], x["b"]
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("0-d")
        if np.matmul(np.empty(a.shape, np.int8), np.empty(b.shape, np.int8)).shape != g.shape:
            raise ValueError("grad_out's shape")
        dt = _float_result(g.dtype, a.dtype, b.dtype)
        if dt is None:
            raise TypeError("dtypes")
        ga, gb = _torch_matmul_grads(g, a, b)
        return (ga.astype(dt) if opts.get("grad_a", True) else None,
                gb.astype(dt) if opts.get("grad_b", True) else None)
    out_in = opts.get("weight_layout") == "out_in"
    xx, w = x["x"], x["w"]
    if xx.ndim == 0 or w.ndim != 2:
        raise ValueError("ranks")
    n_in, n_out = (w.shape[1], w.shape[0]) if out_in else w.shape
    if xx.shape[-1] != n_in:
        raise ValueError("x's last dimension")
    def wide(v):
        return np.asarray(v).astype(np.float64)

    if plan.function == "linear":
        b = x["bias"]
        if b is not None and b.shape != (n_out,):
            raise ValueError("bias shape")
        dt = _float_result(xx.dtype, w.dtype, *([] if b is None else [b.dtype]))
        if dt is None:
            raise TypeError("dtypes")
        wt = wide(w).T if out_in else wide(w)
        y = wide(xx).reshape(math.prod(xx.shape[:-1]), n_in) @ wt + (0.0 if b is None else wide(b))
        return y.reshape(xx.shape[:-1] + (n_out,)).astype(dt)
    g = x["g"]
    if g.shape != xx.shape[:-1] + (n_out,):
        raise ValueError("grad_y's shape")
    dt = _float_result(g.dtype, xx.dtype, w.dtype)
    if dt is None:
        raise TypeError("dtypes")
    wt = wide(w).T if out_in else wide(w)
    x2 = wide(xx).reshape(math.prod(xx.shape[:-1]), n_in)
    g2 = wide(g).reshape(x2.shape[0], n_out)
    gw = x2.T @ g2
    return ((g2 @ wt.T).reshape(xx.shape).astype(dt) if opts.get("grad_x", True) else None,
            (gw.T if out_in else gw).astype(dt) if opts.get("grad_weight", True) else None,
            g2.sum(0).astype(dt) if opts.get("grad_bias", True) else None)


def check_grads(plan: GradPlan) -> None:
    opts = dict(plan.options)
    fn = getattr(matgrad, plan.function)
    order = {"matmul_backward": ("g", "a", "b"), "linear": ("x", "w", "bias"), "linear_backward": ("g", "x", "w")}[plan.function]

    def ours(x):
        args = [x[n] for n in order]
        if plan.function == "linear" and args[-1] is None:
            args = args[:-1]
        return fn(*args, **opts)

    got = run_side(ours, plan.arrays, set())
    want = run_side(lambda x: reference_grads(plan, x), plan.arrays, set())
    compare(plan.function, plan, got, want)


# ---------------------------------------------------------------------------------- the MLP


@dataclass(frozen=True)
class MlpPlan:
    arrays: dict
    labels_seed: int
    bad_label: bool
    reg: float


def draw_mlp(d: Draws) -> MlpPlan:
    n, dd, h, c = d.integer(1, 20), d.integer(1, 40), d.integer(1, 40), d.integer(1, 12)
    dt = d.choice(FLOATS)
    arrays = {
        "X": draw_array(d, (n, dd), dt, overlap_ok=False),
        "W1": draw_array(d, (dd, h), dt, overlap_ok=False),
        "b1": draw_array(d, (h,), dt, overlap_ok=False),
        "W2": draw_array(d, (h, c), dt, overlap_ok=False),
        "b2": draw_array(d, (c,), dt, overlap_ok=False),
    }
    return MlpPlan(arrays, d.integer(0, 2**31 - 1), chance(d, 3), d.choice((0.0, 0.0, 0.01, 0.5)))


def _mlp_reference(params, X, y, reg):
    X, W1, b1, W2, b2 = (np.asarray(v, np.float64) for v in (X, params["W1"], params["b1"], params["W2"], params["b2"]))
    n = X.shape[0]
    z1 = X @ W1 + b1
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W2 + b2
    z2s = z2 - z2.max(1, keepdims=True)
    p = np.exp(z2s)
    p /= p.sum(1, keepdims=True)
    loss = -np.mean(z2s[np.arange(n), y] - np.log(np.exp(z2s).sum(1))) + reg * ((W1**2).sum() + (W2**2).sum())
    dz2 = p.copy()
    dz2[np.arange(n), y] -= 1
    dz2 /= n
    dw2 = h1.T @ dz2 + 2 * reg * W2
    dh1 = dz2 @ W2.T
    dz1 = dh1 * (z1 > 0)
    dw1 = X.T @ dz1 + 2 * reg * W1
    return float(loss), {"W1": dw1, "b1": dz1.sum(0), "W2": dw2, "b2": dz2.sum(0)}


def check_mlp(plan: MlpPlan) -> None:
    def labels(n, c):
        y = np.random.default_rng(plan.labels_seed).integers(0, c, n)
        if plan.bad_label:
            y[0] = c
        return y

    def ours(x):
        params = {k: x[k] for k in ("W1", "b1", "W2", "b2")}
        loss, grads = nn.mlp2_loss_and_grads(params, x["X"], labels(x["X"].shape[0], x["W2"].shape[1]), plan.reg)
        return (loss,) + tuple(grads[k] for k in ("W1", "b1", "W2", "b2"))

    def reference(x):
        y = labels(x["X"].shape[0], x["W2"].shape[1])
        if plan.bad_label:
            raise ValueError("label out of range")
        params = {k: x[k] for k in ("W1", "b1", "W2", "b2")}
        loss, grads = _mlp_reference(params, x["X"], y, plan.reg)
        dt = np.dtype(x["X"].dtype).newbyteorder("=")
        return (loss,) + tuple(grads[k].astype(dt) for k in ("W1", "b1", "W2", "b2"))

    got = run_side(ours, plan.arrays, set())
    want = run_side(reference, plan.arrays, set())
    f32 = np.dtype(plan.arrays["X"].dtype).itemsize == 4
    k = sum(plan.arrays[n].shape[0] for n in ("X", "W1", "W2"))
    compare("mlp2_loss_and_grads", plan, got, want, exact=False,
            rtol=8 * k * np.finfo(np.float32 if f32 else np.float64).eps * 30)


# ------------------------------------------------------------------------------------- all

TARGETS: dict[str, tuple[Callable[[Draws], Any], Callable[[Any], None]]] = {
    "matmul": (draw_matmul, check_matmul),
    "matmul_backward": (draw_matmul_backward, check_grads),
    "linear": (lambda d: draw_linear(d, backward=False), check_grads),
    "linear_backward": (lambda d: draw_linear(d, backward=True), check_grads),
    "mlp2_loss_and_grads": (draw_mlp, check_mlp),
}
