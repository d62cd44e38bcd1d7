"""Tests for ``matgrad.torch``: the autograd Functions ``linear`` and ``matmul`` and the
``Linear`` module, against torch itself.

Tolerances follow tests/test_grad.py: an entry that is a sum of L products, computed in any
order, is within gamma_L = L u / (1 - L u) (u = eps / 2) of the exact value relative to the
same sum of absolute values M, so matgrad and torch differ by at most c * L * eps * M
(c = 3) elementwise; M is computed by running torch in float64 on absolute values.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import matgrad  # noqa: E402
import matgrad.torch as mt  # noqa: E402

F = torch.nn.functional
C_BOUND = 3.0
EPS = {torch.float32: float(np.finfo(np.float32).eps), torch.float64: float(np.finfo(np.float64).eps)}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def assert_within(got, ref, mag, terms, what, c=C_BOUND):
    """``got`` (a tensor) has ``ref``'s dtype and shape and is within
    c * terms * eps * mag of it elementwise (NaN never passes)."""
    assert got is not None, f"{what}: None"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype}, expected {ref.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
    tol = c * max(terms, 1) * EPS[ref.dtype] * mag.detach().double()
    err = (got.detach().double() - ref.detach().double()).abs()
    ok = err <= tol
    if not bool(ok.all()):
        idx = (~ok).nonzero()[:5].tolist()
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.numel()} entries outside the bound (terms={terms})"
            + "".join(f"\n  {tuple(i)}: got {got[tuple(i)].item()!r}, torch "
                      f"{ref[tuple(i)].item()!r}, tol {tol[tuple(i)].item()!r}" for i in idx))


def leaf(t, requires_grad=True):
    return t.detach().clone().requires_grad_(requires_grad)


def run_linear(fn, x, w, b, g):
    """y = fn(x, w, b), backward with g; returns y and the leaves' grads."""
    y = fn(x, w, b)
    y.backward(g)
    return y, x.grad, w.grad, None if b is None else b.grad


def linear_reference(x, w, b, g):
    """torch's F.linear on copies, and the same on absolute values in float64 (magnitudes)."""
    ref = run_linear(F.linear, leaf(x), leaf(w), None if b is None else leaf(b), g)
    mag = run_linear(F.linear, leaf(x.abs().double()), leaf(w.abs().double()),
                     None if b is None else leaf(b.abs().double()), g.abs().double())
    return ref, mag


def check_linear_vs_torch(x, w, b, g, what):
    rows = x[..., 0].numel()
    n_out, n_in = w.shape
    (y_r, gx_r, gw_r, gb_r), (y_m, gx_m, gw_m, gb_m) = linear_reference(x, w, b, g)
    x, w = leaf(x), leaf(w)
    b = None if b is None else leaf(b)
    y, gx, gw, gb = run_linear(mt.linear, x, w, b, g)
    assert_within(y, y_r, y_m, n_in + (b is not None), f"{what}: y")
    assert_within(gx, gx_r, gx_m, n_out, f"{what}: grad x")
    assert_within(gw, gw_r, gw_m, rows, f"{what}: grad weight")
    if b is not None:
        assert_within(gb, gb_r, gb_m, rows, f"{what}: grad bias")


def matmul_terms(sa, sb):
    a2 = sa if len(sa) >= 2 else (1,) + tuple(sa)
    b2 = sb if len(sb) >= 2 else tuple(sb) + (1,)
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    nb = int(np.prod(batch))
    return (nb // max(int(np.prod(a2[:-2])), 1) * b2[-1],
            nb // max(int(np.prod(b2[:-2])), 1) * a2[-2])


def check_matmul_vs_torch(a, b, g, what):
    ta_r, tb_r = leaf(a), leaf(b)
    c_r = torch.matmul(ta_r, tb_r)
    c_r.backward(g)
    ta_m, tb_m = leaf(a.abs().double()), leaf(b.abs().double())
    c_m = torch.matmul(ta_m, tb_m)
    c_m.backward(g.abs().double())
    ta, tb = leaf(a), leaf(b)
    c = mt.matmul(ta, tb)
    c.backward(g)
    terms_a, terms_b = matmul_terms(tuple(a.shape), tuple(b.shape))
    assert_within(c, c_r.detach(), c_m, a.shape[-1], f"{what}: forward")
    assert_within(ta.grad, ta_r.grad, ta_m.grad, terms_a, f"{what}: grad a")
    assert_within(tb.grad, tb_r.grad, tb_m.grad, terms_b, f"{what}: grad b")


@pytest.fixture
def gen(request):
    """A torch Generator seeded from the test id."""
    import zlib
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def randn(gen, *shape, dtype=torch.float64):
    return torch.randn(tuple(shape), generator=gen, dtype=dtype)


# --------------------------------------------------------------------------
# gradcheck (float64)
# --------------------------------------------------------------------------

LINEAR_GRADCHECK = [((3, 4), 5), ((2, 3, 4), 2), ((4,), 3), ((1, 1), 1), ((2, 1, 3, 5), 4)]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("x_shape,n_out", LINEAR_GRADCHECK, ids=[str(s) for s in LINEAR_GRADCHECK])
def test_gradcheck_linear(x_shape, n_out, with_bias, gen):
    x = leaf(randn(gen, *x_shape))
    w = leaf(randn(gen, n_out, x_shape[-1]))
    inputs = (x, w, leaf(randn(gen, n_out))) if with_bias else (x, w)
    assert torch.autograd.gradcheck(mt.linear, inputs)


def test_gradcheck_linear_partial_requires_grad(gen):
    x = leaf(randn(gen, 3, 4))
    w = leaf(randn(gen, 5, 4), requires_grad=False)
    b = leaf(randn(gen, 5))
    assert torch.autograd.gradcheck(mt.linear, (x, w, b))
    assert torch.autograd.gradcheck(mt.linear, (leaf(x, False), leaf(w), leaf(b, False)))


MATMUL_GRADCHECK = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (2, 4, 5)),
    ((3, 1, 4, 5), (2, 5, 6)),
    ((4, 5), (2, 3, 5, 6)),
    ((2, 3, 4, 5), (5,)),
    ((5,), (2, 3, 5, 2)),
    ((2, 3, 4, 5), (5, 3)),
    ((2, 1, 3, 4), (1, 2, 4, 2)),
    ((1, 1, 3, 4), (2, 3, 4, 2)),
    ((2, 3, 3, 4), (1, 1, 4, 2)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_GRADCHECK, ids=[f"{a}@{b}" for a, b in MATMUL_GRADCHECK])
def test_gradcheck_matmul(sa, sb, gen):
    a, b = leaf(randn(gen, *sa)), leaf(randn(gen, *sb))
    assert torch.autograd.gradcheck(mt.matmul, (a, b))


# --------------------------------------------------------------------------
# needs_input_grad
# --------------------------------------------------------------------------

@pytest.fixture
def record_linear_backward(monkeypatch):
    """Replaces the NumPy linear_backward that matgrad.torch calls with a recorder."""
    calls = []
    real = mt._np_linear_backward

    def recorder(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((dict(kwargs), result))
        return result

    monkeypatch.setattr(mt, "_np_linear_backward", recorder)
    return calls


@pytest.fixture
def record_matmul_backward(monkeypatch):
    calls = []
    real = mt._np_matmul_backward

    def recorder(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((dict(kwargs), result))
        return result

    monkeypatch.setattr(mt, "_np_matmul_backward", recorder)
    return calls


@pytest.mark.parametrize("need", [(True, True, True), (True, False, True), (False, True, False),
                                  (False, False, True), (True, False, False), (False, True, True)],
                         ids=lambda n: "x%dw%db%d" % n)
def test_linear_needs_input_grad(need, record_linear_backward, gen):
    need_x, need_w, need_b = need
    x0, w0, b0 = randn(gen, 2, 3, 4), randn(gen, 5, 4), randn(gen, 5)
    x, w, b = leaf(x0, need_x), leaf(w0, need_w), leaf(b0, need_b)
    g = randn(gen, 2, 3, 5)
    mt.linear(x, w, b).backward(g)
    assert len(record_linear_backward) == 1
    kwargs, (gx, gw, gb) = record_linear_backward[0]
    assert (kwargs["grad_x"], kwargs["grad_weight"], kwargs["grad_bias"]) == need
    for needed, got, t, name in ((need_x, gx, x, "x"), (need_w, gw, w, "weight"),
                                 (need_b, gb, b, "bias")):
        if needed:
            assert got is not None and t.grad is not None, name
        else:
            assert got is None, f"{name}: computed though not needed"
            assert t.grad is None, f"{name}: .grad assigned though requires_grad=False"
    # the gradients that were computed are the right ones
    xr, wr, br = leaf(x0, need_x), leaf(w0, need_w), leaf(b0, need_b)
    F.linear(xr, wr, br).backward(g)
    for t, r in ((x, xr), (w, wr), (b, br)):
        if r.grad is not None:
            torch.testing.assert_close(t.grad, r.grad, rtol=0, atol=1e-12)


def test_linear_no_bias_never_asks_for_grad_bias(record_linear_backward, gen):
    x, w = leaf(randn(gen, 3, 4)), leaf(randn(gen, 5, 4))
    mt.linear(x, w).sum().backward()
    (kwargs, (gx, gw, gb)), = record_linear_backward
    assert kwargs["grad_bias"] is False and gb is None
    assert gx is not None and gw is not None


def test_linear_nothing_requires_grad(record_linear_backward, gen):
    y = mt.linear(randn(gen, 3, 4), randn(gen, 5, 4), randn(gen, 5))
    assert not y.requires_grad and y.grad_fn is None
    assert record_linear_backward == []


@pytest.mark.parametrize("need", [(True, True), (True, False), (False, True)], ids=str)
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4,)), ((3, 1, 4, 5), (2, 5, 6))])
def test_matmul_needs_input_grad(sa, sb, need, record_matmul_backward, gen):
    a0, b0 = randn(gen, *sa), randn(gen, *sb)
    a, b = leaf(a0, need[0]), leaf(b0, need[1])
    mt.matmul(a, b).sum().backward()
    (kwargs, (ga, gb)), = record_matmul_backward
    assert (kwargs["grad_a"], kwargs["grad_b"]) == need
    assert (ga is not None, gb is not None) == need
    assert (a.grad is not None, b.grad is not None) == need
    ar, br = leaf(a0, need[0]), leaf(b0, need[1])
    torch.matmul(ar, br).sum().backward()
    for t, r in ((a, ar), (b, br)):
        if r.grad is not None:
            torch.testing.assert_close(t.grad, r.grad, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------
# float32 (and float64) against torch
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("x_shape,n_out", [((64, 65), 31), ((2, 3, 5, 17), 9), ((13,), 7),
                                           ((1, 100), 130)], ids=str)
def test_linear_matches_torch(x_shape, n_out, with_bias, dtype, gen):
    x = randn(gen, *x_shape, dtype=dtype)
    w = randn(gen, n_out, x_shape[-1], dtype=dtype)
    b = randn(gen, n_out, dtype=dtype) if with_bias else None
    g = randn(gen, *x_shape[:-1], n_out, dtype=dtype)
    check_linear_vs_torch(x, w, b, g, f"x{x_shape} out={n_out}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_linear_non_contiguous_tensors(dtype, gen):
    n_in, n_out = 11, 6
    cases = {
        "x.t()": (randn(gen, n_in, 8, dtype=dtype).t(), randn(gen, n_out, n_in, dtype=dtype)),
        "weight.t()": (randn(gen, 8, n_in, dtype=dtype), randn(gen, n_in, n_out, dtype=dtype).t()),
        "sliced": (randn(gen, 16, 3 * n_in, dtype=dtype)[::2, ::3],
                   randn(gen, 2 * n_out, n_in, dtype=dtype)[1::2]),
        "expanded x": (randn(gen, n_in, dtype=dtype).expand(5, n_in),
                       randn(gen, n_out, n_in, dtype=dtype)),
        "batched transpose": (randn(gen, 2, n_in, 5, dtype=dtype).transpose(1, 2),
                              randn(gen, n_out, n_in, dtype=dtype)),
    }
    for name, (x, w) in cases.items():
        b = randn(gen, 2 * n_out, dtype=dtype)[::2]
        g = randn(gen, *x.shape[:-1], n_out, dtype=dtype)
        check_linear_vs_torch(x, w, b, g, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_linear_backward_of_sum_expanded_grad(dtype, gen):
    """y.sum().backward() hands the Function an expanded (stride 0) grad_output."""
    x0, w0, b0 = randn(gen, 6, 9, dtype=dtype), randn(gen, 4, 9, dtype=dtype), randn(gen, 4, dtype=dtype)
    check_linear_vs_torch(x0, w0, b0, torch.ones((), dtype=dtype).expand(6, 4), "sum")
    x, w, b = leaf(x0), leaf(w0), leaf(b0)
    mt.linear(x, w, b).sum().backward()
    xr, wr, br = leaf(x0), leaf(w0), leaf(b0)
    F.linear(xr, wr, br).sum().backward()
    # grad_bias of a sum is the row count, exactly; grad_x is the column sums of W
    torch.testing.assert_close(b.grad, torch.full((4,), 6.0, dtype=dtype), rtol=0, atol=0)
    torch.testing.assert_close(b.grad, br.grad, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_linear_empty_batch(dtype, gen):
    """A batch of no rows (e.g. an empty last batch): y is (0, out), and the weight and bias
    gradients are empty sums, exactly 0, as torch gives."""
    x, w, b = leaf(torch.empty(0, 5, dtype=dtype)), leaf(randn(gen, 4, 5, dtype=dtype)), \
        leaf(randn(gen, 4, dtype=dtype))
    y = mt.linear(x, w, b)
    assert y.shape == (0, 4) and y.dtype == dtype
    y.sum().backward()
    assert x.grad.shape == (0, 5)
    torch.testing.assert_close(w.grad, torch.zeros(4, 5, dtype=dtype), rtol=0, atol=0)
    torch.testing.assert_close(b.grad, torch.zeros(4, dtype=dtype), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("sa,sb", [((33, 65), (65, 17)), ((3, 1, 4, 5), (2, 5, 6)), ((7,), (7,)),
                                   ((4, 5), (2, 3, 5, 6)), ((2, 3, 4, 5), (5,)), ((17,), (17, 9))],
                         ids=str)
def test_matmul_matches_torch(sa, sb, dtype, gen):
    a, b = randn(gen, *sa, dtype=dtype), randn(gen, *sb, dtype=dtype)
    out_shape = torch.matmul(a, b).shape
    check_matmul_vs_torch(a, b, randn(gen, *out_shape, dtype=dtype), f"{sa}@{sb}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matmul_vector_vector_is_0d(dtype, gen):
    c = mt.matmul(leaf(randn(gen, 5, dtype=dtype)), leaf(randn(gen, 5, dtype=dtype)))
    assert isinstance(c, torch.Tensor) and c.dim() == 0 and c.dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_matmul_non_contiguous_tensors(dtype, gen):
    a = randn(gen, 9, 6, dtype=dtype).t()
    b = randn(gen, 2, 5, 9, dtype=dtype)[:, ::2].transpose(1, 2)
    check_matmul_vs_torch(a, b, randn(gen, 2, 6, 3, dtype=dtype), "views")


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.int64,
                                   torch.complex64], ids=str)
def test_unsupported_dtypes_raise_type_error(dtype):
    x, w, b = torch.ones(2, 3, dtype=dtype), torch.ones(4, 3, dtype=dtype), torch.ones(4, dtype=dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        mt.linear(x, w, b)
    with pytest.raises(TypeError, match="float32 or float64"):
        mt.linear(x, w)
    with pytest.raises(TypeError, match="float32 or float64"):
        mt.matmul(x, w.t())


def test_unsupported_dtype_in_one_operand_only():
    with pytest.raises(TypeError):
        mt.linear(torch.ones(2, 3), torch.ones(4, 3, dtype=torch.float16))
    with pytest.raises(TypeError):
        mt.linear(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4, dtype=torch.int64))
    with pytest.raises(TypeError):
        mt.matmul(torch.ones(2, 3, dtype=torch.float16), torch.ones(3, 4))


def test_shape_errors_name_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        mt.linear(torch.ones(2, 3), torch.ones(4, 5))
    with pytest.raises(ValueError, match=r"\(7,\)"):
        mt.linear(torch.ones(2, 3), torch.ones(4, 3), torch.ones(7))


# --------------------------------------------------------------------------
# matgrad.torch.Linear
# --------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_linear_module_parameters_like_nn_linear(bias):
    ref = torch.nn.Linear(20, 32, bias=bias)
    mod = mt.Linear(20, 32, bias=bias)
    assert isinstance(mod, torch.nn.Linear)
    assert (mod.in_features, mod.out_features) == (20, 32)
    assert [(n, tuple(p.shape), p.dtype) for n, p in mod.named_parameters()] == \
        [(n, tuple(p.shape), p.dtype) for n, p in ref.named_parameters()]
    assert list(mod.state_dict()) == list(ref.state_dict())
    assert (mod.bias is None) == (not bias)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_module_same_init_after_same_seed(bias):
    for seed in (0, 1, 12345):
        torch.manual_seed(seed)
        ref = torch.nn.Linear(20, 32, bias=bias)
        torch.manual_seed(seed)
        mod = mt.Linear(20, 32, bias=bias)
        for (name, p), (_, q) in zip(ref.named_parameters(), mod.named_parameters()):
            assert torch.equal(p, q), f"{name} differs after manual_seed({seed})"
    # and the next draw of the generator is the same (the same amount was consumed)
    torch.manual_seed(7)
    torch.nn.Linear(5, 3)
    r1 = torch.rand(3)
    torch.manual_seed(7)
    mt.Linear(5, 3)
    assert torch.equal(torch.rand(3), r1)


def test_linear_module_state_dict_both_ways():
    ref = torch.nn.Linear(6, 4)
    mod = mt.Linear(6, 4)
    mod.load_state_dict(ref.state_dict())  # strict: the same keys and shapes
    for (name, p), (_, q) in zip(ref.named_parameters(), mod.named_parameters()):
        assert torch.equal(p, q), name
    mod2 = mt.Linear(6, 4)
    ref2 = torch.nn.Linear(6, 4)
    ref2.load_state_dict(mod2.state_dict())
    for (name, p), (_, q) in zip(mod2.named_parameters(), ref2.named_parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_module_output_and_grads_match(bias, dtype, gen, record_linear_backward):
    ref = torch.nn.Linear(20, 32, bias=bias, dtype=dtype)
    mod = mt.Linear(20, 32, bias=bias, dtype=dtype)
    mod.load_state_dict(ref.state_dict())
    x = randn(gen, 4, 7, 20, dtype=dtype)
    g = randn(gen, 4, 7, 32, dtype=dtype)
    y_ref = ref(x)
    y_ref.backward(g)
    y = mod(x)
    y.backward(g)
    assert len(record_linear_backward) == 1, "the module did not run matgrad's backward"
    mag = torch.nn.Linear(20, 32, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        mag.weight.copy_(ref.weight.abs())
        if bias:
            mag.bias.copy_(ref.bias.abs())
    y_mag = mag(x.abs().double())
    y_mag.backward(g.abs().double())
    assert_within(y, y_ref, y_mag, 20 + bias, "Linear output")
    assert_within(mod.weight.grad, ref.weight.grad, mag.weight.grad, 28, "Linear weight grad")
    if bias:
        assert_within(mod.bias.grad, ref.bias.grad, mag.bias.grad, 28, "Linear bias grad")


def _mlp(linear_cls):
    return torch.nn.Sequential(linear_cls(20, 32), torch.nn.ReLU(), linear_cls(32, 3))


def test_training_matches_nn_linear():
    """10 SGD steps of a small MLP in float64 with matgrad.torch.Linear and nn.Linear from
    the same state.

    Bound: each gradient entry is a sum of at most K = 64 products (batch 64, widths 20, 32),
    so per step the two gradients differ by at most c K eps M (c = 3, M <= max |grad| computed
    from absolute values, < 1 here with cross-entropy's softmax weights and the parameters'
    scale), and a discrepancy d in the parameters grows to at most (1 + lr ||H||) d per step;
    with lr ||H|| <= 1 after T steps |Δθ| <= T c K eps 2^T.  In float64 that is ~4e-10, while
    any error in a gradient formula moves parameters by ~lr * |grad| ~ 1e-2."""
    torch.manual_seed(2024)
    ref = _mlp(torch.nn.Linear).double()
    model = _mlp(mt.Linear).double()
    model.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(99)
    X = torch.randn(64, 20, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (64,), generator=gen)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps, K, eps = 10, 64, EPS[torch.float64]
    losses = []
    for step in range(1, steps + 1):
        for m, o in ((ref, opt_ref), (model, opt)):
            o.zero_grad()
            loss = F.cross_entropy(m(X), labels)
            loss.backward()
            o.step()
            losses.append(loss.item())
        tol = step * C_BOUND * K * eps * 2.0 ** step
        for (name, p), (_, q) in zip(ref.named_parameters(), model.named_parameters()):
            diff = (p - q).abs().max().item()
            assert diff <= tol, f"step {step}: {name} differs by {diff:.3g} > {tol:.3g}"
    # the model did train, with the same loss curve
    assert losses[-2] < losses[0]
    np.testing.assert_allclose(losses[1::2], losses[0::2], rtol=steps * K * eps * 2.0 ** steps)
    # and the parameters did move (so the comparison above is not vacuous)
    torch.manual_seed(2024)
    init = _mlp(torch.nn.Linear).double()
    moved = max((p - q).abs().max().item() for p, q in zip(init.parameters(), model.parameters()))
    assert moved > 1e-3


def test_training_uses_matgrad(record_linear_backward):
    torch.manual_seed(0)
    model = _mlp(mt.Linear)
    X, labels = torch.randn(8, 20), torch.randint(0, 3, (8,))
    F.cross_entropy(model(X), labels).backward()
    assert len(record_linear_backward) == 2
    # first layer's input does not require grad: no grad_x computed for it
    flags = sorted(kw["grad_x"] for kw, _ in record_linear_backward)
    assert flags == [False, True]


def test_linear_module_falls_back_for_other_dtypes():
    mod = mt.Linear(3, 2, dtype=torch.float16)
    ref = torch.nn.Linear(3, 2, dtype=torch.float16)
    ref.load_state_dict(mod.state_dict())
    x = torch.ones(4, 3, dtype=torch.float16)
    y = mod(x)
    assert y.dtype == torch.float16
    assert torch.equal(y, ref(x))


# --------------------------------------------------------------------------
# which form a call takes: none (inference), the classic Function, the torch.func one
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_inference_skips_autograd_same_bits(mode, gen, monkeypatch):
    x, w, b = randn(gen, 5, 7), leaf(randn(gen, 3, 7)), leaf(randn(gen, 3))
    a, m = randn(gen, 2, 5, 7), leaf(randn(gen, 7, 4))
    ref_y = mt._LinearFunction.apply(x, w, b, None)
    ref_c = mt._MatmulFunction.apply(a, m, None)

    def no_function(*args):
        raise AssertionError("an autograd.Function was applied in inference")

    for f in (mt._LinearFunction, mt._LinearFunctionEager, mt._MatmulFunction, mt._MatmulFunctionEager):
        monkeypatch.setattr(f, "apply", no_function)
    with getattr(torch, mode)():
        y, c = mt.linear(x, w, b), mt.matmul(a, m)
    assert not y.requires_grad and y.grad_fn is None and torch.equal(y, ref_y)
    assert not c.requires_grad and c.grad_fn is None and torch.equal(c, ref_c)


def test_forward_ad_under_no_grad_keeps_its_tangent(gen):
    import torch.autograd.forward_ad as fwd
    x, dx, w, b = randn(gen, 4, 6), randn(gen, 4, 6), randn(gen, 3, 6), randn(gen, 3)
    with torch.no_grad(), fwd.dual_level():
        y = mt.linear(fwd.make_dual(x, dx), w, b)
        tangent = fwd.unpack_dual(y).tangent
    assert tangent is not None
    assert_within(tangent, dx @ w.T, dx.abs() @ w.abs().T, 6, "tangent")


def test_eager_calls_take_the_classic_function_with_the_same_bits(gen):
    x0, w0, b0, g = randn(gen, 5, 7), randn(gen, 3, 7), randn(gen, 3), randn(gen, 5, 3)
    grads = {}
    for name, apply in [("eager", lambda x, w, b: mt.linear(x, w, b)),
                        ("setup_context", lambda x, w, b: mt._LinearFunction.apply(x, w, b, None))]:
        x, w, b = leaf(x0), leaf(w0), leaf(b0)
        y = apply(x, w, b)
        grads[name] = (type(y.grad_fn).__name__, y, *torch.autograd.grad(y, (x, w, b), g))
    assert grads["eager"][0] == "_LinearFunctionEagerBackward"
    assert grads["setup_context"][0] == "_LinearFunctionBackward"
    for got, ref in zip(grads["eager"][1:], grads["setup_context"][1:]):
        assert torch.equal(got, ref)
    a, m = leaf(randn(gen, 2, 5, 7)), leaf(randn(gen, 7, 4))
    assert type(mt.matmul(a, m).grad_fn).__name__ == "_MatmulFunctionEagerBackward"
    # Under a transform, the form torch.func needs.
    seen = []
    torch.func.grad(lambda w: (seen.append(torch._C._are_functorch_transforms_active()),
                               mt.linear(x0, w, b0).sum())[1])(w0)
    assert seen == [True]


# --------------------------------------------------------------------------
# import matgrad without torch
# --------------------------------------------------------------------------

def test_import_matgrad_without_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        import matgrad
        y = matgrad.linear(np.ones((2, 3)), np.ones((3, 4)), np.full(4, 0.5))
        assert y.shape == (2, 4) and (y == 3.5).all(), y
        gx, gw, gb = matgrad.linear_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((3, 4)))
        assert (gx == 4).all() and (gw == 2).all() and (gb == 2).all()
        ga, gb = matgrad.matmul_backward(np.ones((2, 4)), np.ones((2, 3)), np.ones((3, 4)))
        assert (ga == 4).all() and (gb == 2).all()
        assert sys.modules["torch"] is None
        try:
            import matgrad.torch
        except ImportError:
            print("matgrad.torch needs torch")
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATGRAD_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["matgrad.torch", "needs", "torch", "ok"], proc.stdout
