"""matgrad.torch's operators as torch sees them: torch.library.opcheck on each (schema, fake
implementation, autograd registration, AOT dispatch), no graph breaks under torch.compile,
compiled results equal to eager ones, and torch.export of a model of matgrad.torch.Linear."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the operators are torch's")

import matgrad.torch as mt  # noqa: E402

OPS = torch.ops.matgrad


def _args(shape_x, n_out, dtype, bias, grads):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape_x, dtype=dtype, generator=g, requires_grad=grads[0])
    w = torch.randn(n_out, shape_x[-1], dtype=dtype, generator=g, requires_grad=grads[1])
    b = torch.randn(n_out, dtype=dtype, generator=g, requires_grad=grads[2]) if bias else None
    return x, w, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape_x,n_out", [((5, 7), 3), ((7,), 4), ((2, 3, 6), 5), ((1, 16), 8)])
@pytest.mark.parametrize("grads,bias", [((True, True, True), True), ((False, True, True), True),
                                         ((True, False, False), False), ((False, False, False), True)])
def test_opcheck_linear(dtype, shape_x, n_out, grads, bias):
    x, w, b = _args(shape_x, n_out, dtype, bias, grads)
    torch.library.opcheck(OPS.linear, (x, w, b, None))
    torch.library.opcheck(OPS.linear, (x.detach(), w.detach()[:, :].t().contiguous().t(), b, "highest"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sa,sb", [((4, 5), (5, 3)), ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)),
                                   ((2, 4, 5), (5, 3)), ((2, 1, 4, 5), (3, 5, 2))])
@pytest.mark.parametrize("grads", [(True, True), (True, False), (False, True)])
def test_opcheck_matmul(dtype, sa, sb, grads):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(sa, dtype=dtype, generator=g, requires_grad=grads[0])
    b = torch.randn(sb, dtype=dtype, generator=g, requires_grad=grads[1])
    torch.library.opcheck(OPS.matmul, (a, b, None))
    if len(sa) == 2 and len(sb) == 2:
        torch.library.opcheck(OPS.matmul, (a.detach().t().contiguous().t(), b.detach().t(), None)
                              if sa[0] == sb[1] else (a, b, "highest"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_backward_operators(dtype):
    g = torch.Generator().manual_seed(2)
    x, w, gy = (torch.randn(s, dtype=dtype, generator=g) for s in ((6, 4), (3, 4), (6, 3)))
    for wanted in ([True, True, True], [False, True, False], [True, False, False]):
        torch.library.opcheck(OPS.linear_backward, (gy, x, w, wanted, None))
    a, b, gc = (torch.randn(s, dtype=dtype, generator=g) for s in ((2, 5, 4), (4, 3), (2, 5, 3)))
    for wanted in ([True, True], [False, True]):
        torch.library.opcheck(OPS.matmul_backward, (gc, a, b, wanted, None))


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1 = mt.Linear(12, 16)
        self.l2 = mt.Linear(16, 4)

    def forward(self, x):
        return self.l2(torch.relu(self.l1(x)))


def test_no_graph_breaks_and_compiled_equals_eager():
    model = _Mlp()
    x = torch.randn(8, 12)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    eager_out = model(x)
    compiled_out = compiled(x)
    torch.testing.assert_close(compiled_out, eager_out, rtol=0, atol=0)
    eager_out.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled(x).sum().backward()
    for p, want in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, want, rtol=0, atol=0)


def test_matmul_compiles_without_graph_breaks():
    def f(a, b):
        return mt.matmul(a, b).relu().sum()

    a, b = torch.randn(3, 4, 5), torch.randn(5, 2)
    explanation = torch._dynamo.explain(f)(a, b)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    torch._dynamo.reset()
    torch.testing.assert_close(torch.compile(f, backend="aot_eager", fullgraph=True)(a, b), f(a, b), rtol=0, atol=0)


def test_export_of_a_linear_model():
    model = _Mlp()
    x = torch.randn(8, 12)
    exported = torch.export.export(model, (x,))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert "matgrad.linear.default" in targets, targets
    torch.testing.assert_close(exported.module()(x), model(x), rtol=0, atol=0)


def test_operators_keep_their_errors():
    with pytest.raises(TypeError, match="float32 or float64 required"):
        OPS.linear(torch.ones(2, 3, dtype=torch.int64), torch.ones(4, 3, dtype=torch.int64), None, None)
    with pytest.raises(ValueError, match="linear"):
        OPS.linear(torch.ones(2, 3), torch.ones(4, 5), None, None)


def test_eager_and_operator_paths_give_the_same_bits():
    # Eagerly matgrad.torch runs autograd.Functions (cheaper to call); compiled, the operators.
    x, w, b = _args((6, 5), 3, torch.float32, True, (True, True, True))
    y = mt.linear(x, w, b)
    y_op = OPS.linear(x, w, b, None)
    torch.testing.assert_close(y, y_op, rtol=0, atol=0)
    grads = torch.autograd.grad(y.sum(), (x, w, b))
    grads_op = torch.autograd.grad(y_op.sum(), (x, w, b))
    for g, g_op in zip(grads, grads_op):
        torch.testing.assert_close(g, g_op, rtol=0, atol=0)
