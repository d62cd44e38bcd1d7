"""Tests for matgrad's gradients: ``matmul_backward``, ``linear`` and ``linear_backward``.

The reference is torch's autograd (``torch.matmul``, ``torch.nn.functional.linear`` and
``x @ w + b``) computed in the same dtype.  Tolerances come from the arithmetic, not from
trial: every entry of every gradient is a sum of L products (a dot product, possibly
followed by a sum over broadcast batch dimensions), and a floating-point sum of L products
computed in any order, with or without FMA, has error at most gamma_L * (the same sum of
absolute values) with gamma_L = L u / (1 - L u), u = eps / 2 (Higham, Accuracy and
Stability of Numerical Algorithms, 3.1).  matgrad and torch each satisfy that bound, so
elementwise

    |matgrad - torch| <= c * L * eps(dtype) * M

where M is the gradient computed from absolute values (|G| |B|^T, |A|^T |G|, ... summed
over the same batch dimensions, in float64) and c = 3 covers both errors and the final
rounding.  Entries whose exact value is a single product or an exact small sum (the
worked example, basis-vector Jacobian rows, zero-size reductions) are compared exactly.

torch is needed for the comparison tests; without it they are skipped.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import matgrad

torch = pytest.importorskip("torch")
F = torch.nn.functional

FLOAT_DTYPES = (np.float32, np.float64)
TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
C_BOUND = 3.0


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def randn(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


def to_torch(x, dtype, requires_grad=False):
    """A contiguous torch copy of ``x`` (torch refuses negative strides)."""
    # np.array(order="C") copies negative strides away and, unlike ascontiguousarray,
    # keeps 0-d arrays 0-d
    t = torch.tensor(np.array(x, order="C"), dtype=TORCH_DTYPE[np.dtype(dtype)])
    return t.requires_grad_(requires_grad)


def grad_of(t):
    """``t.grad`` as NumPy; a leaf that autograd never reached has zero gradient."""
    if t.grad is None:
        return np.zeros(tuple(t.shape), dtype=t.detach().numpy().dtype)
    return t.grad.numpy()


def assert_within(got, ref, mag, terms, dtype, what, c=C_BOUND):
    """``got`` has the dtype and shape of ``ref`` and lies within
    c * terms * eps(dtype) * mag of it, elementwise (NaN never passes)."""
    assert got is not None, f"{what}: got None"
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    tol = c * max(terms, 1) * np.finfo(dtype).eps * np.asarray(mag, dtype=np.float64)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    ok = err <= tol
    if not np.all(ok):
        bad = np.argwhere(~np.atleast_1d(ok))[:5]
        g1, r1, t1 = np.atleast_1d(got), np.atleast_1d(ref), np.atleast_1d(tol)
        lines = [f"{what}: {np.count_nonzero(~ok)} of {ok.size} entries outside the bound "
                 f"(terms={terms}, dtype={np.dtype(dtype)})"]
        for idx in map(tuple, bad):
            lines.append(f"  at {idx}: got {g1[idx]!r}, torch {r1[idx]!r}, tol {t1[idx]!r}")
        raise AssertionError("\n".join(lines))


def mm_dims(a_shape, b_shape):
    """(batch, m, k, n, a_batch, b_batch) of ``a @ b`` under np.matmul's rules."""
    a2 = a_shape if len(a_shape) >= 2 else (1,) + tuple(a_shape)
    b2 = b_shape if len(b_shape) >= 2 else tuple(b_shape) + (1,)
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    return batch, a2[-2], a2[-1], b2[-1], a2[:-2], b2[:-2]


def mm_terms(a_shape, b_shape):
    """Products summed into one entry of grad_a and of grad_b: the dot-product length times
    the number of broadcast batch entries folded onto that operand."""
    batch, m, k, n, a_batch, b_batch = mm_dims(a_shape, b_shape)
    nb = math.prod(batch)
    return nb // max(math.prod(a_batch), 1) * n, nb // max(math.prod(b_batch), 1) * m


def result_shape(a_shape, b_shape):
    batch, m, k, n, _, _ = mm_dims(a_shape, b_shape)
    return tuple(batch) + ((m,) if len(a_shape) >= 2 else ()) + ((n,) if len(b_shape) >= 2 else ())


def torch_matmul_backward(g, a, b, dtype):
    ta = to_torch(a, dtype, True)
    tb = to_torch(b, dtype, True)
    torch.matmul(ta, tb).backward(to_torch(g, dtype))
    return grad_of(ta), grad_of(tb)


def check_matmul_backward(g, a, b, dtype, grad_a=True, grad_b=True):
    """matgrad.matmul_backward on (g, a, b) against torch autograd of torch.matmul."""
    ga, gb = matgrad.matmul_backward(g, a, b, grad_a=grad_a, grad_b=grad_b)
    ref_a, ref_b = torch_matmul_backward(g, a, b, dtype)
    mag_a, mag_b = torch_matmul_backward(np.abs(g), np.abs(a), np.abs(b), np.float64)
    ta, tb = mm_terms(np.shape(a), np.shape(b))
    what = f"{np.shape(a)} @ {np.shape(b)}"
    if grad_a:
        assert_within(ga, ref_a, mag_a, ta, dtype, f"grad_a of {what}")
    else:
        assert ga is None, f"grad_a=False but got {type(ga)}"
    if grad_b:
        assert_within(gb, ref_b, mag_b, tb, dtype, f"grad_b of {what}")
    else:
        assert gb is None, f"grad_b=False but got {type(gb)}"
    return ga, gb


def torch_linear(x, w, b, g, layout, dtype):
    """Forward and gradients of the linear layer by torch autograd."""
    tx = to_torch(x, dtype, True)
    tw = to_torch(w, dtype, True)
    tb = None if b is None else to_torch(b, dtype, True)
    if layout == "out_in":
        y = F.linear(tx, tw, tb)
    else:
        y = tx @ tw
        if tb is not None:
            y = y + tb
    y.backward(to_torch(g, dtype))
    return (y.detach().numpy(), grad_of(tx), grad_of(tw),
            None if tb is None else grad_of(tb))


def linear_dims(x_shape, w_shape, layout):
    n_out, n_in = w_shape if layout == "out_in" else w_shape[::-1]
    rows = math.prod(x_shape[:-1])
    return rows, n_in, n_out


def check_linear(x, w, b, g, layout, dtype, grad_x=True, grad_weight=True, grad_bias=True):
    """matgrad.linear and matgrad.linear_backward against torch, with the error bound."""
    rows, n_in, n_out = linear_dims(np.shape(x), np.shape(w), layout)
    y_ref, gx_ref, gw_ref, gb_ref = torch_linear(x, w, b, g, layout, dtype)
    abs_b = None if b is None else np.abs(b)
    y_mag, gx_mag, gw_mag, _ = torch_linear(np.abs(x), np.abs(w), abs_b, np.abs(g), layout,
                                            np.float64)
    what = f"x{np.shape(x)} w{np.shape(w)} {layout} bias={b is not None}"

    y = matgrad.linear(x, w, b, weight_layout=layout)
    assert_within(y, y_ref, y_mag, n_in + (b is not None), dtype, f"linear {what}")

    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout, grad_x=grad_x,
                                         grad_weight=grad_weight, grad_bias=grad_bias)
    if grad_x:
        assert_within(gx, gx_ref, gx_mag, n_out, dtype, f"grad_x {what}")
    else:
        assert gx is None
    if grad_weight:
        assert_within(gw, gw_ref, gw_mag, rows, dtype, f"grad_weight {what}")
    else:
        assert gw is None
    if grad_bias:
        # d/db of sum(G * (XW + b)) = column sums of G, whatever bias the forward had
        gb_ref = to_torch(g, dtype).reshape(rows, n_out).sum(0).numpy()
        gb_mag = np.abs(np.asarray(g, np.float64)).reshape(rows, n_out).sum(0)
        assert_within(gb, gb_ref, gb_mag, rows, dtype, f"grad_bias {what}")
    else:
        assert gb is None
    return y, gx, gw, gb


def weight_shape(n_in, n_out, layout):
    return (n_out, n_in) if layout == "out_in" else (n_in, n_out)


# --------------------------------------------------------------------------
# 1. matmul_backward against torch autograd
# --------------------------------------------------------------------------

MATMUL_SHAPES = [
    # 2-D, around micro-kernel tile edges
    ((1, 1), (1, 1)),
    ((3, 4), (4, 5)),
    ((7, 13), (13, 17)),
    ((33, 65), (65, 17)),
    ((64, 100), (100, 48)),
    # 1-D @ 2-D, 2-D @ 1-D, 1-D @ 1-D
    ((4,), (4, 5)),
    ((17,), (17, 33)),
    ((3, 4), (4,)),
    ((33, 17), (17,)),
    ((1,), (1,)),
    ((7,), (7,)),
    ((100,), (100,)),
    # batched, with broadcasting
    ((2, 3, 4), (2, 4, 5)),
    ((3, 1, 4, 5), (2, 5, 6)),
    ((4, 5), (2, 3, 5, 6)),
    ((2, 3, 4, 5), (5,)),
    ((5,), (2, 3, 5, 6)),
    ((2, 3, 4, 5), (5, 6)),
    ((1, 4, 5), (3, 5, 6)),
    ((3, 4, 5), (1, 5, 6)),
    ((2, 1, 3, 4), (1, 5, 4, 2)),
    ((4,), (3, 4, 2)),
    ((3, 2, 4), (4,)),
    ((6, 17, 9), (9, 33)),
    ((1, 1, 3, 4), (2, 3, 4, 5)),      # two broadcast batch dims summed back in grad_a
    ((2, 3, 4, 5), (1, 1, 5, 3)),      # ... and in grad_b
    ((2, 1, 1, 3, 4), (3, 2, 4, 2)),   # lead dim and size-1 dims together
    ((3, 1, 4), (2, 1, 3, 4, 5)),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES, ids=[f"{a}@{b}" for a, b in MATMUL_SHAPES])
def test_matmul_backward_vs_torch(sa, sb, dtype, rng):
    a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
    g = randn(rng, result_shape(sa, sb), dtype)
    ga, gb = check_matmul_backward(g, a, b, dtype)
    assert ga.shape == sa and gb.shape == sb


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("grad_a,grad_b", list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((3, 1, 4, 5), (2, 5, 6)), ((5,), (5,)),
                                   ((2, 3, 4, 5), (5, 6)), ((4, 5), (2, 3, 5, 6))])
def test_matmul_backward_flags(sa, sb, grad_a, grad_b, dtype, rng):
    a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
    g = randn(rng, result_shape(sa, sb), dtype)
    ga, gb = check_matmul_backward(g, a, b, dtype, grad_a=grad_a, grad_b=grad_b)
    assert (ga is None) != grad_a and (gb is None) != grad_b


def test_matmul_backward_flags_default_true(rng):
    a, b = randn(rng, (3, 4)), randn(rng, (4, 5))
    ga, gb = matgrad.matmul_backward(np.ones((3, 5)), a, b)
    assert ga is not None and gb is not None


def _views(rng, dtype):
    """(name, a, b) with a and b strided, transposed, reversed, Fortran or broadcast views."""
    base = randn(rng, (20, 24), dtype)
    batch_base = randn(rng, (3, 12, 10), dtype)
    yield "transposed a", randn(rng, (8, 6), dtype).T, randn(rng, (8, 5), dtype)
    yield "transposed b", randn(rng, (6, 8), dtype), randn(rng, (5, 8), dtype).T
    yield "both transposed", randn(rng, (8, 6), dtype).T, randn(rng, (5, 8), dtype).T
    yield "step slices", base[::2, ::3], randn(rng, (24, 7), dtype)[::3, ::-1]
    yield "reversed", base[::-1, ::-1], randn(rng, (24, 5), dtype)[::-1]
    yield "fortran", np.asfortranarray(randn(rng, (9, 7), dtype)), \
        np.asfortranarray(randn(rng, (7, 11), dtype))
    yield "1-D strided", randn(rng, 30, dtype)[::-3], randn(rng, (10, 4), dtype)
    yield "1-D @ 1-D strided", randn(rng, 30, dtype)[::3], randn(rng, 20, dtype)[::-2]
    yield "batched swapaxes", np.swapaxes(batch_base, -1, -2)[:, ::2, ::3], \
        randn(rng, (7, 4), dtype)[:, ::-1].T
    yield "batched reversed batch", batch_base[::-1, ::3, ::-2], randn(rng, (3, 5, 6), dtype)[::-1]
    yield "broadcast_to a", np.broadcast_to(randn(rng, (4, 5), dtype), (3, 4, 5)), \
        randn(rng, (5, 6), dtype)
    yield "broadcast_to b", randn(rng, (2, 4, 5), dtype), \
        np.broadcast_to(randn(rng, (5, 1), dtype), (2, 5, 6))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
def test_matmul_backward_strided_views(dtype, rng):
    for name, a, b in _views(rng, dtype):
        shape = result_shape(a.shape, b.shape)
        # grad_out as a non-contiguous view too
        g = randn(rng, shape[::-1], dtype).T if len(shape) == 2 else randn(rng, shape, dtype)
        try:
            check_matmul_backward(g, a, b, dtype)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
def test_matmul_backward_broadcast_grad_out(dtype, rng):
    # grad_out of a sum() is a broadcast (zero-stride) array of ones
    a, b = randn(rng, (2, 6, 9), dtype), randn(rng, (9, 4), dtype)
    g = np.broadcast_to(np.ones((), dtype), (2, 6, 4))
    check_matmul_backward(g, a, b, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
def test_matmul_backward_inputs_not_modified(dtype, rng):
    a, b = randn(rng, (2, 5, 6), dtype), randn(rng, (6, 7), dtype)
    g = randn(rng, (2, 5, 7), dtype)
    copies = [x.copy() for x in (g, a, b)]
    matgrad.matmul_backward(g, a, b)
    for x, c in zip((g, a, b), copies):
        np.testing.assert_array_equal(x, c)


ZERO_SIZE_SHAPES = [
    ((0, 4), (4, 5)),          # m = 0: grad_b = A^T G is a zero (4, 5)
    ((3, 0), (0, 5)),          # k = 0: both gradients are empty
    ((3, 4), (4, 0)),          # n = 0: grad_a = G B^T is a zero (3, 4)
    ((0, 3, 4), (4, 5)),       # empty batch, shared 2-D b: zero grad_b
    ((0, 3, 4), (0, 4, 5)),
    ((4, 5), (0, 5, 6)),       # empty batch, shared 2-D a: zero grad_a
    ((2, 0, 4), (4, 5)),
    ((2, 0, 3, 4), (4, 5)),
    ((2, 3, 0), (0, 5)),       # k = 0 with a batch and a shared 2-D b
    ((2, 3, 4), (4, 0)),       # n = 0 with a batch and a shared 2-D b
    ((0,), (0,)),              # scalar result, empty gradients
    ((0,), (0, 5)),
    ((3, 0), (0,)),
    ((4,), (4, 0)),            # result (0,): zero grad_a
    ((0, 4), (4,)),            # result (0,): zero grad_b
    ((2, 0, 4), (4,)),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("sa,sb", ZERO_SIZE_SHAPES, ids=[f"{a}@{b}" for a, b in ZERO_SIZE_SHAPES])
def test_matmul_backward_zero_size(sa, sb, dtype, rng):
    a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
    g = randn(rng, result_shape(sa, sb), dtype)
    ga, gb = matgrad.matmul_backward(g, a, b)
    ref_a, ref_b = torch_matmul_backward(g, a, b, dtype)
    for got, ref, shape, name in ((ga, ref_a, sa, "grad_a"), (gb, ref_b, sb, "grad_b")):
        assert got.shape == shape, (name, got.shape, shape)
        assert got.dtype == dtype, (name, got.dtype)
        # G or the other operand is empty, so every entry is an empty sum: exactly 0
        np.testing.assert_array_equal(got, np.zeros(shape, dtype), err_msg=name)
        np.testing.assert_array_equal(got, ref, err_msg=name)


# Random broadcastable shapes (sizes 1..6, zero sizes are covered above).
@st.composite
def broadcast_matmul_shapes(draw):
    m, k, n = (draw(st.integers(1, 6)) for _ in range(3))
    nbatch = draw(st.integers(0, 3))
    batch = [draw(st.integers(1, 3)) for _ in range(nbatch)]
    def operand_batch():
        keep = draw(st.integers(0, nbatch))
        dims = batch[nbatch - keep:]
        return tuple(d if draw(st.booleans()) else 1 for d in dims)
    a_vec = draw(st.booleans()) and draw(st.booleans())
    b_vec = draw(st.booleans()) and draw(st.booleans())
    sa = (k,) if a_vec else operand_batch() + (m, k)
    sb = (k,) if b_vec else operand_batch() + (k, n)
    return sa, sb


@settings(max_examples=50, deadline=None)
@given(shapes=broadcast_matmul_shapes(), dtype=st.sampled_from(FLOAT_DTYPES),
       seed=st.integers(0, 2**32 - 1))
def test_matmul_backward_random_broadcast_shapes(shapes, dtype, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes
    a, b = randn(rng, sa, dtype), randn(rng, sb, dtype)
    g = randn(rng, result_shape(sa, sb), dtype)
    ga, gb = check_matmul_backward(g, a, b, dtype)
    assert ga.shape == sa and gb.shape == sb


# --------------------------------------------------------------------------
# 2. linear and linear_backward against torch
# --------------------------------------------------------------------------

LINEAR_SHAPES = [  # (x shape, out)
    ((1, 1), 1),
    ((5, 3), 4),
    ((17, 33), 9),
    ((64, 65), 31),
    ((100, 48), 130),
    ((2, 3, 5, 7), 6),
    ((4, 1, 11), 3),
    ((7,), 5),
    ((33,), 1),
    ((0, 5), 4),
    ((2, 0, 5), 4),
]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("x_shape,n_out", LINEAR_SHAPES,
                         ids=[f"{s}->{o}" for s, o in LINEAR_SHAPES])
def test_linear_vs_torch(x_shape, n_out, with_bias, layout, dtype, rng):
    n_in = x_shape[-1]
    x = randn(rng, x_shape, dtype)
    w = randn(rng, weight_shape(n_in, n_out, layout), dtype)
    b = randn(rng, (n_out,), dtype) if with_bias else None
    g = randn(rng, x_shape[:-1] + (n_out,), dtype)
    y, gx, gw, gb = check_linear(x, w, b, g, layout, dtype)
    assert y.shape == x_shape[:-1] + (n_out,)
    assert gx.shape == x_shape and gw.shape == w.shape and gb.shape == (n_out,)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("x_shape", [(0, 5), (2, 0, 5), (0, 3, 5)], ids=str)
def test_linear_empty_batch_forward(x_shape, layout, dtype, rng):
    x = randn(rng, x_shape, dtype)
    w = randn(rng, weight_shape(5, 4, layout), dtype)
    for b in (randn(rng, (4,), dtype), None):
        y = matgrad.linear(x, w, b, weight_layout=layout)
        assert y.shape == x_shape[:-1] + (4,) and y.dtype == dtype


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("x_shape", [(0, 5), (2, 0, 5), (0, 3, 5)], ids=str)
def test_linear_empty_batch_backward(x_shape, layout, dtype, rng):
    """No rows: grad_weight = X^T G and grad_bias = column sums of G are empty sums, exactly 0."""
    x = randn(rng, x_shape, dtype)
    w = randn(rng, weight_shape(5, 4, layout), dtype)
    g = np.zeros(x_shape[:-1] + (4,), dtype)
    # the weight and bias gradients alone
    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout, grad_x=False)
    assert gx is None
    np.testing.assert_array_equal(gw, np.zeros(w.shape, dtype))
    np.testing.assert_array_equal(gb, np.zeros(4, dtype))
    assert gw.dtype == gb.dtype == dtype
    # all three
    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout)
    assert gx.shape == x_shape and gx.dtype == dtype
    np.testing.assert_array_equal(gw, np.zeros(w.shape, dtype))
    np.testing.assert_array_equal(gb, np.zeros(4, dtype))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("x_shape,n_out", [((3, 0), 4), ((2, 3, 0), 4), ((3, 5), 0)],
                         ids=["in=0", "in=0 leading", "out=0"])
def test_linear_zero_features(x_shape, n_out, layout, dtype, rng):
    """in = 0: y is the bias and grad_weight is empty, grad_x empty; out = 0: y empty and
    grad_x = G W^T is an empty sum, exactly 0."""
    n_in = x_shape[-1]
    x = randn(rng, x_shape, dtype)
    w = randn(rng, weight_shape(n_in, n_out, layout), dtype)
    b = randn(rng, (n_out,), dtype)
    g = randn(rng, x_shape[:-1] + (n_out,), dtype)
    y = matgrad.linear(x, w, b, weight_layout=layout)
    np.testing.assert_array_equal(y, np.broadcast_to(b, x_shape[:-1] + (n_out,)))
    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout)
    _, gx_ref, gw_ref, gb_ref = torch_linear(x, w, b, g, layout, dtype)
    assert gx.shape == x_shape and gw.shape == w.shape and gb.shape == (n_out,)
    if n_out == 0:
        np.testing.assert_array_equal(gx, np.zeros(x_shape, dtype))
    np.testing.assert_array_equal(gx, gx_ref)
    np.testing.assert_array_equal(gw, gw_ref)
    rows = math.prod(x_shape[:-1])
    assert_within(gb, gb_ref, np.abs(g.astype(np.float64)).reshape(rows, n_out).sum(0), rows,
                  dtype, "grad_bias")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("flags", list(itertools.product([True, False], repeat=3)),
                         ids=lambda f: "x%dw%db%d" % f)
def test_linear_backward_flags(flags, layout, dtype, rng):
    grad_x, grad_weight, grad_bias = flags
    x = randn(rng, (2, 9, 13), dtype)
    w = randn(rng, weight_shape(13, 7, layout), dtype)
    g = randn(rng, (2, 9, 7), dtype)
    _, gx, gw, gb = check_linear(x, w, randn(rng, 7, dtype), g, layout, dtype,
                                 grad_x=grad_x, grad_weight=grad_weight, grad_bias=grad_bias)
    assert (gx is None) != grad_x and (gw is None) != grad_weight and (gb is None) != grad_bias


def test_linear_backward_only_grad_bias_is_column_sums(rng):
    # small integers: the column sums are exact
    g = rng.integers(-50, 50, (6, 4, 5)).astype(np.float64)
    x, w = randn(rng, (6, 4, 3)), randn(rng, (3, 5))
    gx, gw, gb = matgrad.linear_backward(g, x, w, grad_x=False, grad_weight=False)
    assert gx is None and gw is None
    np.testing.assert_array_equal(gb, g.sum(axis=(0, 1)))


def _linear_views(rng, dtype, layout):
    """(name, x, w) with non-contiguous x and weight views."""
    n_in, n_out = 11, 6
    ws = weight_shape(n_in, n_out, layout)
    contiguous_w = randn(rng, ws, dtype)
    yield "weight = w_t.T", randn(rng, (8, n_in), dtype), \
        np.ascontiguousarray(randn(rng, ws[::-1], dtype)).T
    yield "x transposed", randn(rng, (n_in, 8), dtype).T, contiguous_w
    yield "x step slices", randn(rng, (16, 3 * n_in), dtype)[::2, ::3], contiguous_w
    yield "x and w reversed", randn(rng, (8, n_in), dtype)[::-1, ::-1], contiguous_w[::-1, ::-1]
    yield "w step slices", randn(rng, (9, n_in), dtype), \
        randn(rng, (2 * ws[0], 2 * ws[1]), dtype)[::2, 1::2]
    yield "x fortran", np.asfortranarray(randn(rng, (9, n_in), dtype)), np.asfortranarray(contiguous_w)
    yield "x leading strided", randn(rng, (3, 10, n_in), dtype)[:, ::3, :], contiguous_w
    yield "x batched swapaxes", np.swapaxes(randn(rng, (2, n_in, 5), dtype), -1, -2), contiguous_w
    yield "x 1-D reversed", randn(rng, 2 * n_in, dtype)[::-2], contiguous_w
    yield "x broadcast rows", np.broadcast_to(randn(rng, n_in, dtype), (7, n_in)), contiguous_w


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_linear_strided_views(layout, dtype, rng):
    for name, x, w in _linear_views(rng, dtype, layout):
        n_out = w.shape[0] if layout == "out_in" else w.shape[1]
        b = randn(rng, 2 * n_out, dtype)[::-2]  # a strided bias too
        gs = x.shape[:-1] + (n_out,)
        g = randn(rng, gs[::-1], dtype).T if len(gs) == 2 else randn(rng, gs, dtype)
        try:
            check_linear(x, w, b, g, layout, dtype)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def test_linear_default_layout_is_in_out(rng):
    x, w = randn(rng, (4, 3)), randn(rng, (3, 5))
    y = matgrad.linear(x, w)
    assert y.shape == (4, 5)
    np.testing.assert_array_equal(y, matgrad.linear(x, w, weight_layout="in_out"))
    gx, gw, gb = matgrad.linear_backward(np.ones((4, 5)), x, w)
    assert gw.shape == (3, 5) and gb.shape == (5,) and gx.shape == (4, 3)


def test_linear_layouts_agree_exactly_on_integers(rng):
    """With small-integer data every sum is exact, so the two layouts (W and W^T) and
    matmul must give identical results, and grad_weight in out_in is the transpose of
    grad_weight in in_out."""
    x = rng.integers(-9, 10, (6, 5)).astype(np.float64)
    w = rng.integers(-9, 10, (5, 4)).astype(np.float64)
    b = rng.integers(-9, 10, 4).astype(np.float64)
    g = rng.integers(-9, 10, (6, 4)).astype(np.float64)
    y1 = matgrad.linear(x, w, b, weight_layout="in_out")
    y2 = matgrad.linear(x, np.ascontiguousarray(w.T), b, weight_layout="out_in")
    np.testing.assert_array_equal(y1, x @ w + b)
    np.testing.assert_array_equal(y2, y1)
    gx1, gw1, gb1 = matgrad.linear_backward(g, x, w, weight_layout="in_out")
    gx2, gw2, gb2 = matgrad.linear_backward(g, x, np.ascontiguousarray(w.T), weight_layout="out_in")
    np.testing.assert_array_equal(gx1, g @ w.T)
    np.testing.assert_array_equal(gw1, x.T @ g)
    np.testing.assert_array_equal(gb1, g.sum(0))
    np.testing.assert_array_equal(gx2, gx1)
    np.testing.assert_array_equal(gw2, gw1.T)
    np.testing.assert_array_equal(gb2, gb1)


def test_linear_array_likes():
    y = matgrad.linear([[1.0, 2.0]], [[3.0], [4.0]], [0.5])
    np.testing.assert_array_equal(y, [[11.5]])
    gx, gw, gb = matgrad.linear_backward([[1.0]], [[1.0, 2.0]], [[3.0], [4.0]])
    np.testing.assert_array_equal(gx, [[3.0, 4.0]])
    np.testing.assert_array_equal(gw, [[1.0], [2.0]])
    np.testing.assert_array_equal(gb, [1.0])


# --------------------------------------------------------------------------
# 3. the derivation's worked example, exact
# --------------------------------------------------------------------------

def test_worked_example_exact():
    A = np.array([[2, 75, 68], [1, 44, 7]], dtype=np.float64)
    B = np.array([[31, 37, 26, 41], [72, 37, 76, 47], [74, 76, 89, 75]], dtype=np.float64)
    ta = torch.tensor(A, requires_grad=True)
    tb = torch.tensor(B, requires_grad=True)
    loss = torch.matmul(ta, tb).mean()
    loss.backward()
    G = np.full((2, 4), 1 / 8)
    ga, gb = matgrad.matmul_backward(G, A, B)
    # dL/dA = G B^T: every row is B's row sums / 8; dL/dB = A^T G: A's column sums / 8
    expected_a = np.array([[135, 232, 314], [135, 232, 314]]) / 8
    expected_b = np.repeat(np.array([[3], [119], [75]]) / 8, 4, axis=1)
    np.testing.assert_array_equal(ta.grad.numpy(), expected_a)  # the example itself
    np.testing.assert_array_equal(tb.grad.numpy(), expected_b)
    np.testing.assert_array_equal(ga, ta.grad.numpy())
    np.testing.assert_array_equal(gb, tb.grad.numpy())
    # the same example through the linear layer (Y = A B + 0 in in_out, W = B)
    gx, gw, gbias = matgrad.linear_backward(G, A, B)
    np.testing.assert_array_equal(gx, expected_a)
    np.testing.assert_array_equal(gw, expected_b)
    np.testing.assert_array_equal(gbias, np.full(4, 2 / 8))
    # and in torch's layout, W = B^T, grad_weight = (A^T G)^T
    gx, gw, gbias = matgrad.linear_backward(G, A, B.T, weight_layout="out_in")
    np.testing.assert_array_equal(gx, expected_a)
    np.testing.assert_array_equal(gw, expected_b.T)


# --------------------------------------------------------------------------
# 4. dense Jacobians against the shortcut formulas
# --------------------------------------------------------------------------

def dense_jacobians(x, w, layout):
    """∂vec(Y)/∂vec(X), ∂vec(Y)/∂vec(W), ∂vec(Y)/∂b for Y = X W + b (in_out, W (in, out)) or
    Y = X Wᵀ + b (out_in, W (out, in)); vec is row-major, built entry by entry."""
    N, n_in = x.shape
    n_out = w.shape[0] if layout == "out_in" else w.shape[1]
    jx = np.zeros((N * n_out, N * n_in))
    jw = np.zeros((N * n_out, w.size))
    jb = np.zeros((N * n_out, n_out))
    for i in range(N):
        for j in range(n_out):
            row = i * n_out + j
            for p in range(N):
                for q in range(n_in):
                    # ∂Y[i,j]/∂X[p,q] = δ_ip W[q,j]  (in_out)  or  δ_ip W[j,q]  (out_in)
                    wq = w[j, q] if layout == "out_in" else w[q, j]
                    jx[row, p * n_in + q] = (i == p) * wq
            for p in range(w.shape[0]):
                for q in range(w.shape[1]):
                    if layout == "in_out":  # ∂Y[i,j]/∂W[p,q] = X[i,p] δ_jq
                        jw[row, p * w.shape[1] + q] = x[i, p] * (j == q)
                    else:                   # ∂Y[i,j]/∂W[p,q] = δ_jp X[i,q]
                        jw[row, p * w.shape[1] + q] = (j == p) * x[i, q]
            jb[row, j] = 1.0
    return jx, jw, jb


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("N,n_in,n_out", [(1, 1, 1), (3, 4, 5), (4, 7, 2), (6, 3, 9)])
def test_dense_jacobian(N, n_in, n_out, layout, rng):
    x = randn(rng, (N, n_in))
    w = randn(rng, weight_shape(n_in, n_out, layout))
    b = randn(rng, n_out)
    jx, jw, jb = dense_jacobians(x, w, layout)

    # The Jacobians are right: Y is linear in X, in W and in b separately.
    y = matgrad.linear(x, w, b, weight_layout=layout)
    y_ref = x @ (w.T if layout == "out_in" else w)
    y_mag = np.abs(x) @ np.abs(w.T if layout == "out_in" else w)
    assert_within(jx @ x.ravel(), y_ref.ravel(), y_mag.ravel(), n_in, np.float64, "J_X vec(X)")
    assert_within(jw @ w.ravel(), y_ref.ravel(), y_mag.ravel(), n_in, np.float64, "J_W vec(W)")
    np.testing.assert_array_equal(jb @ b, np.tile(b, N))
    assert_within(y, (jx @ x.ravel()).reshape(N, n_out) + b,
                  (np.abs(jx) @ np.abs(x.ravel())).reshape(N, n_out) + np.abs(b),
                  n_in + 1, np.float64, "linear forward via J_X")
    # ... and are the Kronecker forms of the derivation
    if layout == "in_out":
        np.testing.assert_array_equal(jx, np.kron(np.eye(N), w.T))
        np.testing.assert_array_equal(jw, np.kron(x, np.eye(n_out)))
    else:
        np.testing.assert_array_equal(jx, np.kron(np.eye(N), w))
    np.testing.assert_array_equal(jb, np.kron(np.ones((N, 1)), np.eye(n_out)))

    # vec(G)^T J against the shortcut formulas
    g = randn(rng, (N, n_out))
    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout)
    vg, avg = g.ravel(), np.abs(g.ravel())
    assert_within(gx, (vg @ jx).reshape(x.shape), (avg @ np.abs(jx)).reshape(x.shape),
                  n_out, np.float64, "grad_x vs vec(G)^T J_X")
    assert_within(gw, (vg @ jw).reshape(w.shape), (avg @ np.abs(jw)).reshape(w.shape),
                  N, np.float64, "grad_weight vs vec(G)^T J_W")
    assert_within(gb, vg @ jb, avg @ jb, N, np.float64, "grad_bias vs vec(G)^T J_b")

    # Basis grad_y = e_(i,j) gives row (i,j) of each Jacobian; each entry is one product
    # with 1 plus exact zeros, so the rows must be reproduced exactly.
    for row in range(N * n_out):
        e = np.zeros(N * n_out)
        e[row] = 1.0
        gx, gw, gb = matgrad.linear_backward(e.reshape(N, n_out), x, w, weight_layout=layout)
        np.testing.assert_array_equal(gx.ravel(), jx[row], err_msg=f"J_X row {row}")
        np.testing.assert_array_equal(gw.ravel(), jw[row], err_msg=f"J_W row {row}")
        np.testing.assert_array_equal(gb, jb[row], err_msg=f"J_b row {row}")


def test_dense_jacobian_matmul_backward(rng):
    """The same for C = A B with matmul_backward: rows of ∂vec(C)/∂vec(A) = kron(I, Bᵀ) and
    ∂vec(C)/∂vec(B) = kron(A, I) exactly from basis grad_out."""
    m, k, n = 3, 4, 5
    a, b = randn(rng, (m, k)), randn(rng, (k, n))
    ja, jb = np.kron(np.eye(m), b.T), np.kron(a, np.eye(n))
    for row in range(m * n):
        e = np.zeros(m * n)
        e[row] = 1.0
        ga, gb = matgrad.matmul_backward(e.reshape(m, n), a, b)
        np.testing.assert_array_equal(ga.ravel(), ja[row])
        np.testing.assert_array_equal(gb.ravel(), jb[row])


# --------------------------------------------------------------------------
# 5. errors
# --------------------------------------------------------------------------

def _raises(exc, parts, func, *args, **kwargs):
    with pytest.raises(exc) as info:
        func(*args, **kwargs)
    msg = str(info.value)
    for part in parts:
        assert part in msg, f"{part!r} not in error message {msg!r}"


ONES = np.ones


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_error_bias_wrong_length(layout):
    w = ONES(weight_shape(3, 4, layout))
    _raises(ValueError, ["(5,)", str(w.shape)], matgrad.linear, ONES((2, 3)), w, ONES(5),
            weight_layout=layout)
    _raises(ValueError, ["(1, 4)"], matgrad.linear, ONES((2, 3)), w, ONES((1, 4)),
            weight_layout=layout)
    _raises(ValueError, ["()"], matgrad.linear, ONES((2, 3)), w, np.float64(1.0),
            weight_layout=layout)


@pytest.mark.parametrize("func", ["linear", "linear_backward"])
def test_error_x_weight_mismatch(func):
    def call(x, w, layout):
        if func == "linear":
            return matgrad.linear(x, w, weight_layout=layout)
        return matgrad.linear_backward(ONES(x.shape[:-1] + (4,)), x, w, weight_layout=layout)
    # in_out wants x[..., 3] for W (3, 4); out_in wants x[..., 4] for W (3, 4)... and so on
    _raises(ValueError, ["(2, 5)", "(3, 4)"], call, ONES((2, 5)), ONES((3, 4)), "in_out")
    _raises(ValueError, ["(2, 3)", "(4, 5)"], call, ONES((2, 3)), ONES((4, 5)), "out_in")
    _raises(ValueError, ["(2, 7, 4)", "(3, 4)"], call, ONES((2, 7, 4)), ONES((3, 4)), "in_out")
    _raises(ValueError, ["(5,)", "(3, 4)"], call, ONES(5), ONES((3, 4)), "in_out")


@pytest.mark.parametrize("func", ["linear", "linear_backward"])
def test_error_weight_not_2d(func):
    def call(x, w):
        if func == "linear":
            return matgrad.linear(x, w)
        return matgrad.linear_backward(ONES((2, 1)), x, w)
    _raises(ValueError, ["(3,)"], call, ONES((2, 3)), ONES(3))
    _raises(ValueError, ["(1, 3, 1)"], call, ONES((2, 3)), ONES((1, 3, 1)))


def test_error_x_zero_d():
    _raises(ValueError, ["()"], matgrad.linear, np.float64(1.0), ONES((1, 1)))


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_error_grad_y_wrong_shape(layout):
    w = ONES(weight_shape(3, 4, layout))
    _raises(ValueError, ["(2, 5)"], matgrad.linear_backward, ONES((2, 5)), ONES((2, 3)), w,
            weight_layout=layout)
    _raises(ValueError, ["(3, 4)", "(2, 4)"], matgrad.linear_backward, ONES((3, 4)),
            ONES((2, 3)), w, weight_layout=layout)
    _raises(ValueError, ["(8,)"], matgrad.linear_backward, ONES(8), ONES((2, 3)), w,
            weight_layout=layout)
    _raises(ValueError, ["(1, 4)", "(4,)"], matgrad.linear_backward, ONES((1, 4)), ONES(3), w,
            weight_layout=layout)
    # the error is raised whatever is asked for
    _raises(ValueError, ["(2, 5)"], matgrad.linear_backward, ONES((2, 5)), ONES((2, 3)), w,
            weight_layout=layout, grad_x=False, grad_weight=False, grad_bias=False)


def test_error_grad_out_wrong_shape():
    mb = matgrad.matmul_backward
    _raises(ValueError, ["(5, 3)", "(3, 5)"], mb, ONES((5, 3)), ONES((3, 4)), ONES((4, 5)))
    _raises(ValueError, ["(3, 1)", "(3,)"], mb, ONES((3, 1)), ONES((3, 4)), ONES(4))
    _raises(ValueError, ["(1, 5)", "(5,)"], mb, ONES((1, 5)), ONES(4), ONES((4, 5)))
    _raises(ValueError, ["(1,)"], mb, ONES(1), ONES(4), ONES(4))
    _raises(ValueError, ["(3, 4, 6)", "(3, 2, 4, 6)"], mb, ONES((3, 4, 6)), ONES((3, 1, 4, 5)),
            ONES((2, 5, 6)))
    _raises(ValueError, ["(5, 3)"], mb, ONES((5, 3)), ONES((3, 4)), ONES((4, 5)),
            grad_a=False, grad_b=False)


def test_error_matmul_backward_operands():
    mb = matgrad.matmul_backward
    _raises(ValueError, ["(3, 4)", "(5, 6)"], mb, ONES((3, 6)), ONES((3, 4)), ONES((5, 6)))
    _raises(ValueError, ["(2, 3, 4)", "(3, 4, 5)"], mb, ONES((2, 3, 5)), ONES((2, 3, 4)),
            ONES((3, 4, 5)))
    _raises(ValueError, ["()"], mb, ONES(3), np.float64(1.0), ONES(3))


@pytest.mark.parametrize("bad", ["torch", "", "IN_OUT", "oi", None])
def test_error_unknown_weight_layout(bad):
    x, w = ONES((2, 3)), ONES((3, 4))
    _raises(ValueError, [repr(bad)], matgrad.linear, x, w, weight_layout=bad)
    _raises(ValueError, [repr(bad)], matgrad.linear_backward, ONES((2, 4)), x, w,
            weight_layout=bad)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.bool_, np.complex128],
                         ids=lambda d: np.dtype(d).name)
def test_error_non_float_dtypes(dtype):
    x, w, b = ONES((2, 3), dtype), ONES((3, 4), dtype), ONES(4, dtype)
    with pytest.raises(TypeError):
        matgrad.linear(x, w, b)
    with pytest.raises(TypeError):
        matgrad.linear(x, w)
    with pytest.raises(TypeError):
        matgrad.linear_backward(ONES((2, 4), dtype), x, w)
    with pytest.raises(TypeError):
        matgrad.matmul_backward(ONES((2, 4), dtype), x, w)


def test_error_int_arrays_name_dtype():
    with pytest.raises(TypeError, match="int64"):
        matgrad.linear(np.ones((2, 3), np.int64), np.ones((3, 4), np.int64))


def test_operands_are_positional_only():
    x, w = ONES((2, 3)), ONES((3, 4))
    with pytest.raises(TypeError):
        matgrad.linear(x=x, weight=w)
    with pytest.raises(TypeError):
        matgrad.linear_backward(ONES((2, 4)), x, weight=w)
    with pytest.raises(TypeError):
        matgrad.matmul_backward(ONES((2, 4)), a=x, b=w)


# --------------------------------------------------------------------------
# 7. thread determinism
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_linear_backward_thread_determinism(layout, dtype, rng, restore_num_threads):
    x = randn(rng, (300, 257), dtype)
    w = randn(rng, weight_shape(257, 129, layout), dtype)
    b = randn(rng, 129, dtype)
    g = randn(rng, (300, 129), dtype)
    results = {}
    for threads in (1, 2):
        matgrad.set_num_threads(threads)
        assert matgrad.get_num_threads() == threads
        y = matgrad.linear(x, w, b, weight_layout=layout)
        grads = matgrad.linear_backward(g, x, w, weight_layout=layout)
        ga, gb = matgrad.matmul_backward(g, x, w.T if layout == "out_in" else w)
        results[threads] = (y,) + grads + (ga, gb)
    names = ("y", "grad_x", "grad_weight", "grad_bias", "matmul grad_a", "matmul grad_b")
    for name, r1, r2 in zip(names, results[1], results[2]):
        assert r1.dtype == r2.dtype == dtype and r1.shape == r2.shape
        assert r1.tobytes() == r2.tobytes(), f"{name} differs between 1 and 2 threads"
    # and the values are right, not only reproducible
    check_linear(x, w, b, g, layout, dtype)

