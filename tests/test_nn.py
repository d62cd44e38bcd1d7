"""Tests for ``matgrad.nn.mlp2_loss_and_grads`` (checked against torch autograd) and the
digits demo (``python -m matgrad demo`` / ``matgrad._demo.main``)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import matgrad
from matgrad import _demo
from matgrad.nn import init_mlp2_params, mlp2_loss_and_grads

KEYS = ("W1", "b1", "W2", "b2")


def make_problem(rng, dtype, n=37, d=19, h=23, c=7):
    params = {
        "W1": rng.standard_normal((d, h)) / np.sqrt(d),
        "b1": rng.standard_normal(h) * 0.1,
        "W2": rng.standard_normal((h, c)) / np.sqrt(h),
        "b2": rng.standard_normal(c) * 0.1,
    }
    params = {k: v.astype(dtype) for k, v in params.items()}
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, c, size=n)
    return params, X, y


def torch_reference(params, X, y, reg):
    """Loss and gradients by torch autograd (the network written out in torch ops)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p = {k: torch.from_numpy(np.array(v)).requires_grad_(True) for k, v in params.items()}
    scores = F.relu(torch.from_numpy(X) @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"]
    loss = F.cross_entropy(scores, torch.from_numpy(np.asarray(y, np.int64)))
    loss = loss + reg * ((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum())
    grads = torch.autograd.grad(loss, [p[k] for k in KEYS])
    return loss.item(), dict(zip(KEYS, (g.numpy() for g in grads))), scores.detach().numpy()


TOLS = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-6)}


# --------------------------------------------------------------------------
# against torch autograd
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reg", [0.0, 0.05])
@pytest.mark.parametrize("shape", [(37, 19, 23, 7), (1, 5, 3, 2), (64, 64, 128, 10),
                                   (130, 33, 70, 3)])
def test_loss_and_grads_match_torch(rng, dtype, reg, shape):
    params, X, y = make_problem(rng, dtype, *shape)
    want_loss, want, _ = torch_reference(params, X, y, reg)
    loss, grads = mlp2_loss_and_grads(params, X, y, reg)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, want_loss, **TOLS[dtype])
    assert set(grads) == set(KEYS)
    for k in KEYS:
        assert grads[k].shape == params[k].shape, k
        assert grads[k].dtype == dtype, k
        np.testing.assert_allclose(grads[k], want[k], **TOLS[dtype], err_msg=k)


def test_inputs_not_modified(rng):
    params, X, y = make_problem(rng, np.float64)
    before = {k: v.copy() for k, v in params.items()}
    X0, y0 = X.copy(), y.copy()
    mlp2_loss_and_grads(params, X, y, 0.1)
    mlp2_loss_and_grads(params, X)
    for k in KEYS:
        np.testing.assert_array_equal(params[k], before[k])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_reg_adds_penalty_and_its_gradient(rng):
    params, X, y = make_problem(rng, np.float64)
    reg = 0.3
    l0, g0 = mlp2_loss_and_grads(params, X, y, 0.0)
    l1, g1 = mlp2_loss_and_grads(params, X, y, reg)
    penalty = reg * (np.sum(params["W1"] ** 2) + np.sum(params["W2"] ** 2))
    np.testing.assert_allclose(l1 - l0, penalty, rtol=1e-12)
    for k in ("W1", "W2"):
        np.testing.assert_allclose(g1[k] - g0[k], 2 * reg * params[k], rtol=1e-10, atol=1e-14)
    for k in ("b1", "b2"):
        np.testing.assert_array_equal(g1[k], g0[k])


def test_finite_differences_float64(rng):
    """Central differences on a few entries of every parameter (independent of torch)."""
    params, X, y = make_problem(rng, np.float64, n=9, d=5, h=6, c=4)
    # Keep pre-activations away from the ReLU kink so the loss is smooth around each point.
    params["b1"] += 0.5
    reg = 0.1
    _, grads = mlp2_loss_and_grads(params, X, y, reg)
    eps = 1e-6
    for k in KEYS:
        flat = params[k].reshape(-1)
        for i in rng.choice(flat.size, size=min(5, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp, _ = mlp2_loss_and_grads(params, X, y, reg)
            flat[i] = old - eps
            lm, _ = mlp2_loss_and_grads(params, X, y, reg)
            flat[i] = old
            np.testing.assert_allclose(grads[k].reshape(-1)[i], (lp - lm) / (2 * eps),
                                       rtol=1e-5, atol=1e-8, err_msg=f"{k}[{i}]")


def test_numerically_stable_with_huge_scores(rng):
    params, X, y = make_problem(rng, np.float32)
    params["W2"] *= 1e4  # scores of order 1e4: exp would overflow without the shift
    params["b2"] += 500.0
    loss, grads = mlp2_loss_and_grads(params, X, y)
    assert np.isfinite(loss)
    for k in KEYS:
        assert np.all(np.isfinite(grads[k])), k
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    want_loss, _, _ = torch_reference(p64, X.astype(np.float64), y, 0.0)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-3)


def test_zero_hidden_activation_gives_zero_first_layer_grads(rng):
    params, X, y = make_problem(rng, np.float64)
    params["b1"][:] = -1e6  # every hidden unit dead: relu'(Z1) = 0 everywhere
    _, grads = mlp2_loss_and_grads(params, X, y)
    assert not grads["W1"].any() and not grads["b1"].any()
    assert not grads["W2"].any()  # H1 = 0 as well


def test_noncontiguous_and_mixed_inputs(rng):
    params, X, y = make_problem(rng, np.float64)
    want_loss, want = mlp2_loss_and_grads(params, X, y, 0.01)
    # Fortran-ordered weights, a strided X, labels as a Python list of another int type.
    p2 = {k: np.asfortranarray(v) for k, v in params.items()}
    Xbig = np.zeros((X.shape[0], 2 * X.shape[1]))
    Xbig[:, ::2] = X
    loss, grads = mlp2_loss_and_grads(p2, Xbig[:, ::2], [int(v) for v in y], 0.01)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-13)
    for k in KEYS:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-12, atol=1e-15)
    loss32, _ = mlp2_loss_and_grads(params, X, y.astype(np.uint8), 0.01)
    np.testing.assert_allclose(loss32, want_loss, rtol=1e-13)


def test_float32_params_with_float64_x_promote(rng):
    params, X, y = make_problem(rng, np.float32)
    loss, grads = mlp2_loss_and_grads(params, X.astype(np.float64), y)
    assert all(g.dtype == np.float64 for g in grads.values())


# --------------------------------------------------------------------------
# the scores path (no labels)
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scores_match_torch(rng, dtype):
    params, X, y = make_problem(rng, dtype)
    _, _, want = torch_reference(params, X, y, 0.0)
    scores = mlp2_loss_and_grads(params, X)
    assert scores.shape == (X.shape[0], params["W2"].shape[1])
    assert scores.dtype == dtype
    np.testing.assert_allclose(scores, want, **TOLS[dtype])
    # reg does not change the scores
    np.testing.assert_array_equal(mlp2_loss_and_grads(params, X, None, 0.5), scores)


def test_scores_match_numpy(rng):
    params, X, _ = make_problem(rng, np.float64)
    h = np.maximum(X @ params["W1"] + params["b1"], 0)
    want = h @ params["W2"] + params["b2"]
    np.testing.assert_allclose(mlp2_loss_and_grads(params, X), want, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def _bad(params, X, y=None, **changes):
    p = dict(params)
    for k, v in changes.items():
        if v is None:
            del p[k]
        else:
            p[k] = v
    return p, X, y


@pytest.mark.parametrize("labels, match", [
    (lambda y, c: np.where(np.arange(y.size) == 3, c, y), r"labels y must be < C=7"),
    (lambda y, c: np.where(np.arange(y.size) == 3, c + 10, y), r"got label 17"),
    (lambda y, c: np.where(np.arange(y.size) == 0, -1, y), r"negative label -1"),
    (lambda y, c: y.astype(np.float64), r"labels y must be integers.*float64"),
    (lambda y, c: y + 0.5, r"labels y must be integers"),
    (lambda y, c: y.astype(bool), r"labels y must be integers.*bool"),
    (lambda y, c: y[:-1], r"labels y must have shape \(37,\)"),
    (lambda y, c: y[:, None], r"labels y must have shape \(37,\)"),
    (lambda y, c: np.array(["a"] * y.size), r"labels y must be integers"),
])
def test_bad_labels(rng, labels, match):
    params, X, y = make_problem(rng, np.float64)
    with pytest.raises(ValueError, match=match):
        mlp2_loss_and_grads(params, X, labels(y, 7))


@pytest.mark.parametrize("key", KEYS)
def test_missing_param_key(rng, key):
    params, X, y = make_problem(rng, np.float64)
    del params[key]
    with pytest.raises(ValueError, match=f"params is missing '{key}'"):
        mlp2_loss_and_grads(params, X, y)
    with pytest.raises(ValueError, match=f"missing '{key}'"):
        mlp2_loss_and_grads(params, X)


def test_missing_several_keys_names_all(rng):
    params, X, y = make_problem(rng, np.float64)
    with pytest.raises(ValueError, match=r"missing 'W1', 'b2'"):
        mlp2_loss_and_grads({"b1": params["b1"], "W2": params["W2"]}, X, y)


@pytest.mark.parametrize("what, change, match", [
    ("X cols", lambda p, X: (p, X[:, :-1]), r"X of shape \(37, 18\) does not fit W1 of shape "
                                            r"\(19, 23\)"),
    ("X 1-D", lambda p, X: (p, X[0]), r"X must be 2-D"),
    ("X 3-D", lambda p, X: (p, X[None]), r"X must be 2-D"),
    ("W1 rows", lambda p, X: ({**p, "W1": p["W1"][:-1]}, X), r"X of shape .* does not fit W1"),
    ("W1 1-D", lambda p, X: ({**p, "W1": p["W1"][0]}, X), r"W1 must be 2-D"),
    ("W1/W2", lambda p, X: ({**p, "W2": p["W2"][:-1]}, X),
     r"W1 of shape \(19, 23\) does not fit W2 of shape \(22, 7\)"),
    ("W2 1-D", lambda p, X: ({**p, "W2": p["W2"][:, 0]}, X), r"W2 must be 2-D"),
    ("b1 len", lambda p, X: ({**p, "b1": p["b1"][:-1]}, X), r"b1 must have shape \(23,\)"),
    ("b1 2-D", lambda p, X: ({**p, "b1": p["b1"][None]}, X), r"b1 must have shape \(23,\)"),
    ("b2 len", lambda p, X: ({**p, "b2": np.zeros(8)}, X), r"b2 must have shape \(7,\)"),
    ("b2 scalar", lambda p, X: ({**p, "b2": np.float64(0)}, X), r"b2 must have shape \(7,\)"),
])
@pytest.mark.parametrize("with_labels", [True, False])
def test_bad_shapes(rng, what, change, match, with_labels):
    params, X, y = make_problem(rng, np.float64)
    p, X2 = change(params, X)
    with pytest.raises(ValueError, match=match):
        mlp2_loss_and_grads(p, X2, y if with_labels else None)


def test_bad_reg(rng):
    params, X, y = make_problem(rng, np.float64)
    for reg in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="reg must be"):
            mlp2_loss_and_grads(params, X, y, reg)


def test_empty_batch_with_labels(rng):
    params, X, y = make_problem(rng, np.float64)
    with pytest.raises(ValueError, match="no rows"):
        mlp2_loss_and_grads(params, X[:0], y[:0])


def test_non_float_and_non_dict(rng):
    params, X, y = make_problem(rng, np.float64)
    p16 = {k: v.astype(np.float16) for k, v in params.items()}
    with pytest.raises(TypeError, match="float32 or float64"):
        mlp2_loss_and_grads(p16, X.astype(np.float16), y)
    # Integer X with float weights promotes (as NumPy would) instead of failing.
    loss, _ = mlp2_loss_and_grads(params, np.round(X * 3).astype(np.int64), y)
    assert np.isfinite(loss)
    with pytest.raises(TypeError, match="params must be a dict"):
        mlp2_loss_and_grads([params[k] for k in KEYS], X, y)


def test_init_params_shapes():
    p = init_mlp2_params(64, 32, 10, dtype=np.float64, seed=1)
    assert {k: v.shape for k, v in p.items()} == {"W1": (64, 32), "b1": (32,), "W2": (32, 10),
                                                  "b2": (10,)}
    assert all(v.dtype == np.float64 for v in p.values())


# --------------------------------------------------------------------------
# the demo
# --------------------------------------------------------------------------

def test_demo_cli_short_run():
    """`python -m matgrad demo` is wired to matgrad._demo.main (3 epochs, no torch)."""
    pytest.importorskip("sklearn")
    env = dict(os.environ, MATGRAD_NUM_THREADS=str(matgrad.get_num_threads()))
    proc = subprocess.run(
        [sys.executable, "-m", "matgrad", "demo", "--epochs", "3", "--no-torch",
         "--no-progress"],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert "epoch   3/3" in proc.stdout
    assert "held-out accuracy" in proc.stdout


def _max_loss_diff(out: str) -> float:
    return float(out.split("max |matgrad - torch| over")[1].split("=")[1].split()[0])


def test_demo_default_settings_reach_95_percent(capsys):
    """The demo with its default settings reaches >= 95% held-out accuracy (torch's
    repeat of the training is left to the shorter tests below, to keep this one fast)."""
    pytest.importorskip("sklearn")
    rc = _demo.main(["--no-progress", "--no-torch"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "OK: held-out accuracy" in out
    acc = float(out.split("matgrad: final loss")[1].split("held-out accuracy")[1]
                .split("%")[0])
    assert acc >= 95.0
    assert "epoch  25/25" in out


def test_demo_in_bfloat16_reaches_95_percent(capsys):
    """--precision medium trains on bfloat16 products (AMX where the CPU has it) to >= 95%,
    and times the run at highest beside it."""
    pytest.importorskip("sklearn")
    rc = _demo.main(["--no-progress", "--no-torch", "--precision", "medium", "--epochs", "15"])
    out = capsys.readouterr().out
    assert rc == 0, out
    acc = float(out.split("matgrad: final loss")[1].split("held-out accuracy")[1].split("%")[0])
    assert acc >= 95.0 and "(precision medium)" in out
    assert "matgrad at precision highest" in out and "highest/medium" in out


def test_demo_float32_with_torch_loss_curves_agree(capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    rc = _demo.main(["--epochs", "3", "--hidden", "64", "--no-progress"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    assert "training time: matgrad" in out
    assert _max_loss_diff(out) < 1e-4, out


def test_demo_float64_with_torch_agrees_tightly(capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    rc = _demo.main(["--dtype", "float64", "--epochs", "2", "--hidden", "32",
                     "--no-progress"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    assert _max_loss_diff(out) < 1e-10, out


def test_demo_progress_bar_fallback_without_tqdm(capsys, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    rc = _demo.main(["--epochs", "1", "--no-torch", "--hidden", "16"])
    captured = capsys.readouterr()
    assert rc in (0, 1)
    assert "matgrad [" in captured.err  # the simple bar
    assert "epoch   1/1" in captured.out


def test_demo_low_accuracy_returns_1(capsys):
    pytest.importorskip("sklearn")
    rc = _demo.main(["--epochs", "1", "--hidden", "1", "--lr", "1e-6", "--no-torch",
                     "--no-progress"])
    assert rc == 1
    assert "FAILED" in capsys.readouterr().err


def test_demo_without_sklearn(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    rc = _demo.main(["--no-torch"])
    assert rc == 2
    assert "pip install 'matgrad[demo]'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--lr", "-1"], ["--dtype", "float16"],
                                  ["--bogus"], ["--reg", "x"]])
def test_demo_bad_usage_returns_2(capsys, argv):
    assert _demo.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_demo_help_returns_0(capsys):
    assert _demo.main(["--help"]) == 0
    assert "--batch-size" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_mask_is_fused_into_the_grad_x_gemm(dtype):
    # mlp2 computes dZ1 = (dZ2 W2ᵀ) ⊙ (H1 > 0) in one GEMM: the kernel keeps each stored
    # element only where the mask is positive (a select, as torch's threshold_backward).
    from matgrad import _matgrad

    rng = np.random.default_rng(3)
    n, h, c = 37, 45, 10
    g = rng.standard_normal((n, c)).astype(dtype)
    w = rng.standard_normal((h, c)).astype(dtype)
    mask = np.maximum(rng.standard_normal((n, h)), 0).astype(dtype)  # a ReLU output
    mask[::5, ::3] = np.nan                                          # NaN > 0 is false
    got = np.full((n, h), np.nan, dtype)
    _matgrad.linear_backward_into(g, mask, w, False, got, None, None, False, mask[:, :])
    full = g.astype(np.float64) @ w.T.astype(np.float64)
    want = np.where(mask > 0, full, 0.0)
    tol = 4 * c * np.finfo(dtype).eps * (np.abs(g) @ np.abs(w).T)
    assert np.all(got[~(mask > 0)] == 0)
    assert np.all(np.abs(got - want) <= tol)
    with pytest.raises(ValueError, match="does not fit"):
        _matgrad.linear_backward_into(g, mask, w, False, got, None, None, False, mask[:, :-1])
    with pytest.raises(TypeError, match="grad_x_relu_mask"):
        _matgrad.linear_backward_into(g, mask, w, False, got, None, None, False, mask.astype(np.float16))
