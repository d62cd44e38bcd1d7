"""torch.func transforms over matgrad.torch's functions: grad (and grad of grad), vmap (onto
matgrad where the batch is leading rows of one operand, else torch's rule), per-sample
gradients, jvp, jacrev, jacfwd and hessian, each against the same transform of torch's own
op, in float64."""

import pytest
import torch

import matgrad.torch as mt

F = torch.nn.functional


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(7)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    return {"x": r(4, 3), "w": r(2, 3), "b": r(2), "xb": r(5, 4, 3), "wb": r(5, 2, 3),
            "a": r(5, 4, 3), "m": r(3, 6), "mb": r(2, 3, 6), "v": r(3)}


def close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_grad_and_grad_of_grad(tensors):
    x, w, b, a, v = (tensors[k] for k in "x w b a v".split())
    close(torch.func.grad(lambda w: mt.linear(x, w, b).sum())(w), torch.func.grad(lambda w: F.linear(x, w, b).sum())(w))
    close(torch.func.grad(lambda v: mt.matmul(a[0], v).sum())(v), torch.func.grad(lambda v: (a[0] @ v).sum())(v))
    gg = lambda f: torch.func.grad(lambda w: torch.func.grad(lambda w: (f(w) ** 2).sum())(w).sum())(w)  # noqa: E731
    close(gg(lambda w: mt.linear(x, w, b)), gg(lambda w: F.linear(x, w, b)))


def test_vmap(tensors):
    x, w, b, xb, wb, a, m, mb = (tensors[k] for k in "x w b xb wb a m mb".split())
    close(torch.func.vmap(lambda xx: mt.linear(xx, w, b))(xb), F.linear(xb, w, b))
    close(torch.func.vmap(lambda xx: mt.linear(xx, w, b), in_dims=1)(xb.movedim(0, 1)), F.linear(xb, w, b))
    close(torch.func.vmap(lambda ww: mt.linear(x, ww, b))(wb), torch.stack([F.linear(x, ww, b) for ww in wb]))
    close(torch.func.vmap(lambda aa: mt.matmul(aa, m))(a), a @ m)
    close(torch.func.vmap(lambda vv: mt.matmul(vv, m))(a[:, 0]), a[:, 0] @ m)
    close(torch.func.vmap(lambda mm: mt.matmul(a[0], mm))(mb), a[0] @ mb)
    close(torch.func.vmap(mt.matmul)(a, a.transpose(1, 2)), a @ a.transpose(1, 2))


def test_per_sample_gradients(tensors):
    w, b, xb = tensors["w"], tensors["b"], tensors["xb"]
    per_sample = lambda f: torch.func.vmap(torch.func.grad(f), in_dims=(None, 0))(w, xb)  # noqa: E731
    close(per_sample(lambda w, xx: mt.linear(xx, w, b).sum()), per_sample(lambda w, xx: F.linear(xx, w, b).sum()))


def test_forward_mode_and_jacobians(tensors):
    x, w, b, a, v = (tensors[k] for k in "x w b a v".split())
    close(torch.func.jvp(lambda v: mt.matmul(a[0], v), (v,), (v,))[1], a[0] @ v)
    close(torch.func.jacrev(lambda w: mt.linear(x, w, b))(w), torch.func.jacrev(lambda w: F.linear(x, w, b))(w))
    close(torch.func.jacfwd(lambda w: mt.linear(x, w, b))(w), torch.func.jacfwd(lambda w: F.linear(x, w, b))(w))
    close(torch.func.hessian(lambda v: (mt.matmul(a[0], v) ** 3).sum())(v), torch.func.hessian(lambda v: ((a[0] @ v) ** 3).sum())(v))
    close(torch.func.hessian(lambda w: (mt.linear(x, w, b) ** 3).sum())(w), torch.func.hessian(lambda w: (F.linear(x, w, b) ** 3).sum())(w))
