"""precision="high" / "medium": float32 products with bfloat16 operands, on the CPU's matrix
engine (AMX) where it has one and on the FMA kernels (forced on an AMX machine too), against
float64 references, with bounds from the arithmetic:

- medium: the exact product of the bfloat16-rounded operands, summed in float32:
  |C − Σ bf16(a) bf16(b)| ≤ 2 (k + 2) ε₃₂ Σ |bf16(a)| |bf16(b)|;
- high (bfloat16×3): about 16 bits of each operand, the dropped lo·lo term 2⁻¹⁶ smaller:
  |C − Σ a b| ≤ (2⁻¹⁴ + 2 (k + 2) ε₃₂) Σ |a| |b|.
"""

from __future__ import annotations

import numpy as np
import pytest

import matgrad
from matgrad import _matgrad

EPS32 = float(np.finfo(np.float32).eps)


def round_bf16(x):
    """float32 → bfloat16 (to nearest, ties to even) → float32, in NumPy."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32).reshape(np.shape(x))


def bound(a, b, precision):
    """(reference, tolerance) of a @ b at ``precision`` (see the module's docstring)."""
    a, b = np.asarray(a), np.asarray(b)
    if precision == "medium":
        a, b = round_bf16(a), round_bf16(b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref, mag = a64 @ b64, np.abs(a64) @ np.abs(b64)
    k = a.shape[-1]
    tol = 2 * (k + 2) * EPS32 * mag
    if precision == "high":
        tol = tol + 2.0**-14 * mag
    return ref, tol + 1e-30


def assert_within(got, a, b, precision, extra=0.0):
    ref, tol = bound(a, b, precision)
    err = np.abs(np.asarray(got, np.float64) - ref)
    assert np.all(err <= tol + extra), f"{precision}: max excess {np.max(err - tol - extra):.3g}"


@pytest.fixture(params=["fma", "amx"])
def engine(request):
    """Runs the test on the FMA kernels (operands rounded while packing) and on AMX."""
    if request.param == "amx" and not (matgrad.amx_supported() and matgrad.simd_kernel() == "avx512"):
        pytest.skip("this CPU (or OS) has no AMX bfloat16 tiles: the AMX half cannot run here")
    _matgrad.use_amx(request.param == "amx")
    try:
        assert _matgrad.amx_in_use() == (request.param == "amx")
        yield request.param
    finally:
        _matgrad.use_amx(True)


@pytest.fixture
def default_precision():
    before = matgrad.get_matmul_precision()
    yield
    matgrad.set_matmul_precision(before)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_rounding_to_nearest_even_on_exact_values(engine):
    # x · 1: the product is bf16(x); ties (halfway values) go to the even mantissa.
    ulp = 2.0**-7
    x = np.array([[1 + ulp / 2, 1 + 1.5 * ulp, 1 + ulp / 2 + 2.0**-20, -(1 + 1.5 * ulp), 3.0]], np.float32).T
    one = np.ones((1, 1), np.float32)
    got = matgrad.matmul(x, one, precision="medium")
    want = np.array([[1.0], [1 + 2 * ulp], [1 + ulp], [-(1 + 2 * ulp)], [3.0]], np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, round_bf16(x))
    # "high" keeps what bf16 drops: x · 1 is exact to 16 bits.
    hi = matgrad.matmul(x, one, precision="high")
    assert np.all(np.abs(hi - x) <= np.abs(x) * 2.0**-16)


@pytest.mark.parametrize("precision", ["medium", "high"])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (5, 3, 7), (31, 33, 32), (33, 17, 64), (64, 100, 96), (100, 600, 40), (70, 1100, 130)])
def test_matmul(engine, precision, m, k, n, rng):
    a, b = f32(rng, m, k), f32(rng, k, n)
    assert_within(matgrad.matmul(a, b, precision=precision), a, b, precision)
    # transposed and strided views, and out=
    at, bt = np.asfortranarray(a), b[:, ::-1]
    out = np.full((n, m), np.nan, np.float32).T
    assert matgrad.matmul(at, bt, out=out, precision=precision) is out
    assert_within(out, at, bt, precision)


@pytest.mark.parametrize("precision", ["medium", "high"])
def test_batched_and_vectors(engine, precision, rng):
    a, b = f32(rng, 5, 17, 40), f32(rng, 5, 40, 9)
    assert_within(matgrad.matmul(a, b, precision=precision), a, b, precision)
    w = f32(rng, 40, 9)
    assert_within(matgrad.matmul(a, w, precision=precision), a, w, precision)
    v = f32(rng, 40)
    assert_within(matgrad.matmul(a[0], v, precision=precision), a[0], v, precision)


@pytest.mark.parametrize("precision", ["medium", "high"])
@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_linear_layer(engine, precision, layout, rng):
    x, g = f32(rng, 64, 100), f32(rng, 64, 48)
    w = f32(rng, 48, 100) if layout == "out_in" else f32(rng, 100, 48)
    b = f32(rng, 48)
    wt = w.T if layout == "out_in" else w
    y = matgrad.linear(x, w, b, weight_layout=layout, precision=precision)
    assert_within(y - b, x, wt, precision, extra=4 * EPS32 * np.abs(b))
    gx, gw, gb = matgrad.linear_backward(g, x, w, weight_layout=layout, precision=precision)
    assert_within(gx, g, wt.T, precision)
    assert_within(gw.T if layout == "out_in" else gw, x.T, g, precision)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-5, atol=1e-5)
    ga, gb2 = matgrad.matmul_backward(g, x, wt, precision=precision)
    assert_within(ga, g, wt.T, precision)
    assert_within(gb2, x.T, g, precision)


def test_mlp_step_trains_in_every_precision(engine, rng):
    from matgrad.bench.reference import mlp2_inputs, mlp2_numpy

    params, X, y = mlp2_inputs(np.float32, (64, 50, 40, 5), seed=3)
    want_loss, want = mlp2_numpy({k: v.astype(np.float64) for k, v in params.items()}, X.astype(np.float64), y)
    for precision, rtol in (("highest", 1e-4), ("high", 1e-3), ("medium", 3e-2)):
        loss, grads = matgrad.nn.mlp2_loss_and_grads(params, X, y, precision=precision)
        assert abs(loss - want_loss) <= rtol * abs(want_loss), (precision, loss, want_loss)
        for key in ("W1", "W2"):
            scale = np.sqrt(np.mean(want[key] ** 2))
            assert np.max(np.abs(grads[key] - want[key])) <= 10 * rtol * scale + 1e-7, (precision, key)


def test_torch_operators_take_precision(engine, rng):
    torch = pytest.importorskip("torch")
    import matgrad.torch as mt

    x = torch.from_numpy(f32(rng, 16, 30)).requires_grad_(True)
    lin = mt.Linear(30, 20, precision="medium")
    y = lin(x)
    assert_within(y.detach().numpy() - lin.bias.detach().numpy(), x.detach().numpy(),
                  lin.weight.detach().numpy().T, "medium", extra=1e-6)
    y.sum().backward()
    assert x.grad is not None and lin.weight.grad is not None
    a, b = f32(rng, 7, 30), f32(rng, 30, 9)
    c = mt.matmul(torch.from_numpy(a), torch.from_numpy(b), precision="high")
    assert_within(c.numpy(), a, b, "high")


def test_default_and_errors(default_precision, rng):
    a, b = f32(rng, 40, 50), f32(rng, 50, 30)
    exact = matgrad.matmul(a, b)
    assert matgrad.get_matmul_precision() == "highest"
    np.testing.assert_array_equal(matgrad.matmul(a, b, precision="highest"), exact)
    matgrad.set_matmul_precision("medium")
    assert matgrad.get_matmul_precision() == "medium"
    np.testing.assert_array_equal(matgrad.matmul(a, b), matgrad.matmul(a, b, precision="medium"))
    assert not np.array_equal(matgrad.matmul(a, b), exact)
    # the default leaves float64 alone; asking for bfloat16 on float64 is a TypeError
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    np.testing.assert_array_equal(matgrad.matmul(a64, b64), matgrad.matmul(a64, b64, precision="highest"))
    for func, args in ((matgrad.matmul, (a64, b64)), (matgrad.linear, (a64, b64))):
        with pytest.raises(TypeError, match="float32"):
            func(*args, precision="high")
    with pytest.raises(TypeError, match="float32"):
        matgrad.matmul(a64.tolist(), b64, precision="medium")  # the Python path too
    for bad in ("bf16", "HIGH", "", None, 3):
        if bad is None:
            continue
        with pytest.raises(ValueError, match="'highest', 'high' or 'medium'"):
            matgrad.set_matmul_precision(bad)
        with pytest.raises(ValueError, match="'highest', 'high' or 'medium'"):
            matgrad.matmul(a, b, precision=bad)
    with pytest.raises(ValueError, match="'highest', 'high' or 'medium'"):
        matgrad.linear_backward(a[:, :30], a, b[:, :30].T, precision="low")
