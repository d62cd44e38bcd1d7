"""NumPy's own matmul tests, run against ``matgrad.matmul``.

The numpy wheel ships its test-suite; ``numpy/_core/tests/test_multiarray.py``
holds ``TestMatmul(MatmulCommon)`` whose tests call ``self.matmul``, a class
attribute (``matmul = np.matmul``).  Subclassing it and rebinding ``matmul``
runs every one of those tests on matgrad.

A few tests of that class (and a few in ``TestMethods``) call ``np.matmul``
by name instead of ``self.matmul``; inherited as they are they would only
test NumPy, so they are restated below against ``self.matmul``, keeping
NumPy's data and assertions.

Not run here, on purpose (they test things a plain function cannot have):
  * ``TestMatmulOperator`` -- the ``@`` operator / ``operator.matmul``
    (``__matmul__`` dispatch, ``__array_priority__``), not our function;
  * ``TestMatmulInplace`` -- ``a @= b``, again the operator;
  * ``test_matmul_axes`` -- the ufunc-only ``axes=`` keyword.
"""

import fractions
import importlib

import numpy as np
import pytest
from numpy.testing import assert_, assert_array_equal, assert_equal

import matgrad


def _import_numpy_tests():
    for name in ("numpy._core.tests.test_multiarray",   # NumPy >= 2.0
                 "numpy.core.tests.test_multiarray"):   # NumPy 1.x
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    pytest.skip("this numpy installation does not ship its test-suite",
                allow_module_level=True)


tm = _import_numpy_tests()

# Tests of NumPy's TestMatmul that cannot apply to a plain function, with the
# reason for each.  Everything not listed here must pass.
NOT_APPLICABLE = {
    # (none so far: every inherited test exercises behaviour that
    #  matgrad.matmul promises -- np.matmul's results, dtypes, errors, out=)
}


class TestMatgradMatmul(tm.TestMatmul):
    """Every test of NumPy's TestMatmul / MatmulCommon with matgrad.matmul.

    staticmethod: a plain (Python or builtin) function stored on a class
    would otherwise be bound to the test instance."""

    matmul = staticmethod(matgrad.matmul)

    # --- restated: NumPy's versions call np.matmul by name ----------------

    @pytest.mark.parametrize(
        "args", tm.TestMatmul.test_dot_equivalent.pytestmark[0].args[1])
    def test_dot_equivalent(self, args):
        r1 = self.matmul(*args)
        r2 = np.dot(*args)
        assert_equal(r1, r2)

        r3 = self.matmul(args[0].copy(), args[1].copy())
        assert_equal(r1, r3)

        # matrix matrix, issue 29164
        if [len(args[0].shape), len(args[1].shape)] == [2, 2]:
            out_f = np.zeros((r2.shape[0] * 2, r2.shape[1] * 2), order='F')
            r4 = self.matmul(*args, out=out_f[::2, ::2])
            assert_equal(r2, r4)

    def test_matmul_empty(self):
        a = np.empty((3, 0), dtype=object)
        b = np.empty((0, 3), dtype=object)
        c = np.zeros((3, 3))
        assert_array_equal(self.matmul(a, b), c)

    def test_matmul_exception_multiply(self):
        # test that matmul fails if `__mul__` is missing
        class add_not_multiply:
            def __add__(self, other):
                return self
        a = np.full((3, 3), add_not_multiply())
        with pytest.raises(TypeError):
            self.matmul(a, a)

    def test_matmul_exception_add(self):
        # test that matmul fails if `__add__` is missing
        class multiply_not_add:
            def __mul__(self, other):
                return self
        a = np.full((3, 3), multiply_not_add())
        with pytest.raises(TypeError):
            self.matmul(a, a)

    def test_matmul_bool(self):
        # gh-14439
        a = np.array([[1, 0], [1, 1]], dtype=bool)
        assert np.max(a.view(np.uint8)) == 1
        b = self.matmul(a, a)
        # matmul with boolean output should always be 0, 1
        assert np.max(b.view(np.uint8)) == 1

        rg = np.random.default_rng(np.random.PCG64(43))
        d = rg.integers(2, size=4 * 5, dtype=np.int8)
        d = d.reshape(4, 5) > 0
        out1 = self.matmul(d, d.reshape(5, 4))
        out2 = np.dot(d, d.reshape(5, 4))
        assert_equal(out1, out2)

        c = self.matmul(np.zeros((2, 0), dtype=bool), np.zeros(0, dtype=bool))
        assert not np.any(c)

    def test_matmul_object_fractions_scalar(self):
        # like test_matmul_object_type_scalar, which does use self.matmul;
        # kept as an extra check of the object path with a 2-D operand
        F = fractions.Fraction
        m = np.array([[F(1, 2), F(1, 3)], [F(1, 4), F(1, 5)]])
        v = np.array([F(2, 3), F(5, 7)])
        res = self.matmul(m, v)
        assert res.dtype == object
        assert list(res) == [F(1, 3) + F(5, 21), F(1, 6) + F(1, 7)]


for _name, _reason in NOT_APPLICABLE.items():
    assert hasattr(TestMatgradMatmul, _name), _name
    setattr(TestMatgradMatmul, _name,
            pytest.mark.skip(reason=_reason)(lambda self: None))


# --- NumPy's TestMethods tests that involve matmul -------------------------

_methods = tm.TestMethods()


def test_arr_mult():
    # TestMethods.test_arr_mult is parametrized over (np.dot, np.matmul);
    # its body only uses the function it is given.
    tm.TestMethods.test_arr_mult(_methods, matgrad.matmul)


@pytest.mark.parametrize("dtype", "ifdFD")
def test_no_dgemv(dtype):
    tm.TestMethods.test_no_dgemv(_methods, matgrad.matmul, dtype)


def test_dot_matmul_out():
    # gh-9641: out can be any ndarray, not only a subclass of the inputs
    class Sub(np.ndarray):
        pass
    a = np.ones((2, 2)).view(Sub)
    b = np.ones((2, 2)).view(Sub)
    out = np.ones((2, 2))
    res = matgrad.matmul(a, b, out=out)
    assert res is out
    assert_equal(out, np.full((2, 2), 2.0))


def test_dot_matmul_inner_array_casting_fails():
    class A:
        def __array__(self, *args, **kwargs):
            raise NotImplementedError

    # Don't override the error from calling __array__()
    with pytest.raises(NotImplementedError):
        matgrad.matmul(A(), A())


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.float32])
def test_matmul_out(dtype):
    # overlapping memory (NumPy's test uses int64; the float dtypes take
    # matgrad's own kernels)
    a = np.arange(18, dtype=dtype).reshape(2, 3, 3)
    b = np.matmul(a, a)
    c = matgrad.matmul(a, a, out=a)
    assert_(c is a)
    assert_equal(c, b)
    a = np.arange(18, dtype=dtype).reshape(2, 3, 3)
    c = matgrad.matmul(a, a, out=a[::-1, ...])
    assert_(c.base is a.base)
    assert_equal(c, b)
