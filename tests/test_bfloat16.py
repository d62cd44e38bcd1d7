"""bfloat16 arrays (ml_dtypes, the matgrad[bf16] extra) in matmul, linear, linear_backward and
matmul_backward: bfloat16 in, bfloat16 out, products summed in float32 and rounded once at the
end (to nearest, ties to even); a float32 ``out=`` without that rounding; mixed with float32 or
float64, promoted as ml_dtypes does. On the FMA kernels and, where the CPU has it, on AMX.

Bounds: the float32 sum of the exact products of bfloat16 values is within
2 (k + 2) ε₃₂ Σ|a||b| of the float64 product (as "medium" in test_precision); rounding to
bfloat16 adds at most half its ulp, 2⁻⁸ |C|.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import matgrad
from test_precision import EPS32, engine  # noqa: F401  (the fixture)

BF16 = np.dtype(ml_dtypes.bfloat16)


def bf16_operand(rng, shape):
    return rng.standard_normal(shape).astype(BF16)


def reference(a, b):
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a64 @ b64, np.abs(a64) @ np.abs(b64)


def assert_float32_sum(got, a, b):
    """``got`` (float32) is the float32 sum of the exact products: within the accumulation bound."""
    ref, mag = reference(a, b)
    k = np.shape(a)[-1]
    err = np.abs(np.asarray(got, np.float64) - ref)
    assert np.all(err <= 2 * (k + 2) * EPS32 * mag + 1e-30), float(np.max(err))


def assert_rounded_once(got, a, b):
    """``got`` (bfloat16) is a float32 sum within its bound, rounded once to bfloat16."""
    assert got.dtype == BF16
    ref, mag = reference(a, b)
    k = np.shape(a)[-1]
    err = np.abs(np.asarray(got, np.float64) - ref)
    assert np.all(err <= 2.0**-8 * np.abs(ref) * (1 + 4 * k * EPS32) + 2 * (k + 2) * EPS32 * mag + 1e-30)


SHAPES = [((7, 9), (9, 5)), ((1, 64), (64, 33)), ((130, 70), (70, 129)), ((3, 17, 20), (20, 6)),
          ((2, 1, 8, 8), (5, 8, 8)), ((20,), (20, 4)), ((4, 20), (20,)), ((20,), (20,))]


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_matmul_bfloat16_in_bfloat16_out(rng, engine, sa, sb):  # noqa: F811
    a, b = bf16_operand(rng, sa), bf16_operand(rng, sb)
    got = matgrad.matmul(a, b)
    assert np.shape(got) == np.matmul(a.astype(np.float32), b.astype(np.float32)).shape
    assert_rounded_once(np.asarray(got), a, b)
    # The one rounding is of the float32 result matgrad computes into a float32 out.
    wide = np.empty(np.shape(got), np.float32)
    matgrad.matmul(a, b, out=wide)
    assert_float32_sum(wide, a, b)
    np.testing.assert_array_equal(np.asarray(got).astype(np.float32), wide.astype(BF16).astype(np.float32))


def test_float32_out_is_not_rounded(rng):
    a, b = bf16_operand(rng, (40, 300)), bf16_operand(rng, (300, 30))
    out = np.full((40, 30), np.nan, np.float32)
    assert matgrad.matmul(a, b, out=out) is out
    assert_float32_sum(out, a, b)
    assert np.any(out.astype(BF16).astype(np.float32) != out)  # values bfloat16 cannot hold


def test_bfloat16_out_and_views(rng):
    a = bf16_operand(rng, (50, 40))[::2, ::-1]       # strided, reversed
    b = bf16_operand(rng, (30, 40)).T                 # transposed view
    out = np.zeros((25, 30), BF16)
    assert matgrad.matmul(a, b, out=out) is out
    assert_rounded_once(out, a, b)
    with pytest.raises(ValueError):
        matgrad.matmul(a, b, out=np.zeros((25, 31), BF16))


def test_rounding_is_to_nearest_even():
    """Exact sums that sit half-way between two bfloat16 values (ulp 2⁻⁷ at 1)."""
    b = np.ones((2, 1), BF16)
    a = np.array([[1.0, 2.0**-8],                     # 1 + 2⁻⁸: tie, the even 1 wins
                  [1.0 + 2.0**-7, 2.0**-8],           # 1 + 3·2⁻⁸: tie, the even 1 + 2⁻⁶ wins
                  [1.0, 2.0**-8 + 2.0**-12]], BF16)   # past the tie: up
    got = matgrad.matmul(a, b).astype(np.float64).ravel()
    np.testing.assert_array_equal(got, [1.0, 1.0 + 2.0**-6, 1.0 + 2.0**-7])


def test_mixed_with_float_promotes_as_ml_dtypes(rng):
    a = bf16_operand(rng, (6, 5))
    for other in (np.float32, np.float64):
        b = rng.standard_normal((5, 4)).astype(other)
        got = matgrad.matmul(a, b)
        assert got.dtype == np.result_type(BF16, other) == other
        ref = np.asarray(a, np.float64) @ b.astype(np.float64)
        np.testing.assert_allclose(got, ref, rtol=0, atol=30 * np.finfo(other).eps * float(np.abs(ref).max() + 1))


def test_precision_names_still_checked(rng):
    a = bf16_operand(rng, (3, 3))
    for p in ("highest", "high", "medium"):
        np.testing.assert_array_equal(matgrad.matmul(a, a, precision=p).view(np.uint16),
                                      matgrad.matmul(a, a).view(np.uint16))
    with pytest.raises(ValueError, match="precision"):
        matgrad.matmul(a, a, precision="fast")


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
def test_linear_layer_in_bfloat16(rng, engine, layout):  # noqa: F811
    x = bf16_operand(rng, (33, 40))
    w = bf16_operand(rng, (40, 24))
    bias = bf16_operand(rng, (24,))
    weight = w if layout == "in_out" else np.ascontiguousarray(w.T)
    y = matgrad.linear(x, weight, bias, weight_layout=layout)
    assert y.dtype == BF16 and y.shape == (33, 24)
    xb = np.concatenate([x, np.ones((33, 1), BF16)], axis=1)      # the bias as a last column
    wb = np.concatenate([w, bias[None, :]], axis=0)
    assert_rounded_once(y, xb, wb)

    g = bf16_operand(rng, (33, 24))
    gx, gw, gb = matgrad.linear_backward(g, x, weight, weight_layout=layout)
    assert gx.dtype == gw.dtype == gb.dtype == BF16
    assert_rounded_once(gx, g, w.T)
    assert_rounded_once(gw, x.T, g) if layout == "in_out" else assert_rounded_once(gw, g.T, x)
    assert_rounded_once(gb, np.ones((1, 33), BF16), g)


def test_matmul_backward_in_bfloat16(rng):
    a, b, g = bf16_operand(rng, (4, 9, 7)), bf16_operand(rng, (7, 5)), bf16_operand(rng, (4, 9, 5))
    ga, gb = matgrad.matmul_backward(g, a, b)
    assert ga.dtype == gb.dtype == BF16 and ga.shape == a.shape and gb.shape == b.shape
    assert_rounded_once(ga, g, np.swapaxes(b, -1, -2))
    assert_rounded_once(gb, a.reshape(36, 7).T, g.reshape(36, 5))
