"""matgrad.dask: the graphs on dask's synchronous scheduler, then the same functions on a real
cluster (a distributed.LocalCluster of two worker processes, one thread each, which import the
installed package).

Values are checked against float64 NumPy within the dot-product error bound of test_matmul
(summing k in blocks, in any order, stays a length-k dot product).
"""

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

import matgrad
import matgrad.dask as md
from matgrad.bench.cluster import task_count as product_tasks
from matgrad.nn import init_mlp2_params, mlp2_loss_and_grads
from test_matmul import assert_within_bound


@pytest.fixture
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


def operand(rng, shape, chunks, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    return x, da.from_array(x, chunks=chunks)


# (a shape, b shape, a chunks, b chunks): ragged chunks, k cut differently in a and b, stacks,
# broadcast batches, 1-D operands.
MATMUL_CASES = [
    ((50, 70), (70, 30), (20, 25), (25, 7)),
    ((64, 64), (64, 64), (64, 64), (64, 64)),
    ((50, 70), (70, 30), (17, 30), (19, 11)),
    ((70,), (70, 30), (25,), (30, 7)),
    ((50, 70), (70,), (20, 30), (40,)),
    ((70,), (70,), (30,), (25,)),
    ((3, 50, 70), (70, 30), (2, 20, 25), (25, 7)),
    ((1, 50, 70), (4, 70, 30), (1, 20, 25), (2, 25, 7)),
    ((2, 1, 5, 7), (3, 7, 4), (1, 1, 2, 3), (2, 3, 2)),
    ((0, 7), (7, 5), (1, 3), (3, 5)),
    ((6, 0), (0, 5), (3, 1), (1, 5)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("panel_bytes", [md.PANEL_BYTES, 1], ids=["one-tile-per-task", "tree"])
@pytest.mark.parametrize("sa,sb,ca,cb", MATMUL_CASES)
def test_matmul_matches_numpy(synchronous, rng, sa, sb, ca, cb, dtype, panel_bytes):
    a, A = operand(rng, sa, ca, dtype)
    b, B = operand(rng, sb, cb, dtype)
    C = md.matmul(A, B, panel_bytes=panel_bytes, split_every=3)
    assert isinstance(C, da.Array)
    assert C.shape == np.matmul(a, b).shape and C.dtype == dtype
    assert C._meta.dtype == dtype and C._meta.ndim == C.ndim
    got = C.compute()
    assert got.dtype == dtype
    assert_within_bound(got, a, b)


def test_matmul_mixed_dtypes_and_array_likes(synchronous, rng):
    a, A = operand(rng, (30, 20), (10, 10), np.float32)
    b = rng.standard_normal((20, 8))  # float64 NumPy: promoted as NumPy does
    C = md.matmul(A, b)
    assert C.dtype == np.float64
    assert_within_bound(C.compute(), a, b)


def test_one_task_per_output_tile(synchronous, rng):
    """The contracted dimension summed into one tile per task: as many tasks as tiles, where
    dask.array.matmul makes one per (i, k, j) and then adds."""
    _, A = operand(rng, (96, 128), (32, 32), np.float64)  # 3 × 4 blocks
    _, B = operand(rng, (128, 64), (32, 32), np.float64)  # 4 × 2 blocks
    ours = product_tasks(md.matmul(A, B), A, B)
    theirs = product_tasks(da.matmul(A, B), A, B)
    assert ours == 3 * 2
    assert theirs >= 3 * 4 * 2 > ours


def test_panel_limit_groups_k_blocks(synchronous, rng):
    """Past panel_bytes the k blocks are cut into groups (slices of whole blocks: a task per
    block), one partial tile per group, summed by a tree: more tasks than one per tile, still
    fewer than dask's one per (i, k, j) and its sums."""
    a, A = operand(rng, (128, 256), (32, 32), np.float64)  # 4 × 8 blocks
    b, B = operand(rng, (256, 128), (32, 32), np.float64)  # 8 × 4 blocks
    panel_per_k = (32 + 32) * 8
    C = md.matmul(A, B, panel_bytes=2 * 32 * panel_per_k, split_every=4)  # groups of 2 k blocks
    slices = 4 * 8 + 8 * 4
    assert product_tasks(C, A, B) == slices + 16 * 4 + 16  # 4 partial tiles each, one sum each
    assert product_tasks(C, A, B) < product_tasks(da.matmul(A, B), A, B)
    assert_within_bound(C.compute(), a, b)


def test_matmul_other_dtypes_fall_back_to_dask(synchronous, rng):
    a = rng.integers(-5, 5, (20, 30))
    b = rng.integers(-5, 5, (30, 10))
    A, B = da.from_array(a, chunks=7), da.from_array(b, chunks=7)
    np.testing.assert_array_equal(md.matmul(A, B).compute(), a @ b)


@pytest.mark.parametrize("sa,sb,message", [
    ((3, 4), (5, 6), "not aligned"),
    ((), (3,), "does not have enough dimensions"),
    ((2, 3, 4), (5, 4, 6), "cannot be broadcast"),
])
def test_matmul_shape_errors(sa, sb, message):
    with pytest.raises(ValueError, match=message):
        md.matmul(da.zeros(sa), da.zeros(sb))


def test_matmul_bad_options():
    A = da.zeros((4, 4))
    with pytest.raises(ValueError, match="panel_bytes"):
        md.matmul(A, A, panel_bytes=0)
    with pytest.raises(ValueError, match="split_every"):
        md.matmul(A, A, split_every=1)
    with pytest.raises(ValueError, match="precision"):
        md.matmul(A, A, precision="fast")


@pytest.mark.parametrize("layout", ["in_out", "out_in"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_forward_and_backward(synchronous, rng, layout, dtype):
    x, X = operand(rng, (100, 30), (33, 10), dtype)  # column chunks too: joined per row chunk
    w = rng.standard_normal((30, 20)).astype(dtype)
    bias = rng.standard_normal(20).astype(dtype)
    weight = w if layout == "in_out" else w.T.copy()
    Y = md.linear(X, weight, bias, weight_layout=layout)
    assert Y.chunks[0] == X.chunks[0]
    got = Y.compute()
    ref = x.astype(np.float64) @ w.astype(np.float64) + bias
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, ref, rtol=0, atol=3 * 31 * eps * float(np.abs(x).max() * np.abs(w).max() * 30))

    g, G = operand(rng, (100, 20), (25, 20), dtype)  # rows cut unlike x's
    gx, gw, gb = md.linear_backward(G, X, weight, weight_layout=layout, split_every=2)
    assert gx.chunks[0] == X.chunks[0] and gw.shape == weight.shape and gb.shape == (20,)
    gx, gw, gb = dask.compute(gx, gw, gb)
    assert_within_bound(gx, g, w.T)
    assert_within_bound(gw, x.T, g) if layout == "in_out" else assert_within_bound(gw, g.T, x)
    np.testing.assert_allclose(gb, g.astype(np.float64).sum(0), rtol=0, atol=3 * 100 * eps * np.abs(g).sum(0).max())


def test_linear_backward_only_what_is_asked(synchronous, rng):
    _, X = operand(rng, (10, 4), (5, 4), np.float64)
    _, G = operand(rng, (10, 3), (5, 3), np.float64)
    gx, gw, gb = md.linear_backward(G, X, np.ones((4, 3)), grad_x=False, grad_bias=False)
    assert gx is None and gb is None and gw.shape == (4, 3)


def test_linear_weight_is_one_block_of_the_graph(rng):
    """The weight is stored once in the graph, not copied into each row chunk's task."""
    _, X = operand(rng, (4000, 256), (100, 256), np.float32)
    w = rng.standard_normal((256, 256)).astype(np.float32)
    Y = md.linear(X, w)
    extra = len(pickle.dumps(dict(Y.__dask_graph__()))) - len(pickle.dumps(dict(X.__dask_graph__())))
    assert X.numblocks[0] == 40
    assert w.nbytes < extra < 2 * w.nbytes


def test_linear_errors():
    X = da.zeros((10, 4))
    with pytest.raises(ValueError, match="features"):
        md.linear(X, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="bias"):
        md.linear(X, np.zeros((4, 3)), np.zeros(4))
    with pytest.raises(TypeError, match="float32 or float64"):
        md.linear(X.astype(np.int64), np.zeros((4, 3), np.int64))
    with pytest.raises(ValueError, match="rows"):
        md.linear_backward(da.zeros((9, 3)), X, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="weight_layout"):
        md.linear(X, np.zeros((4, 3)), weight_layout="io")


def mlp_problem(rng, n, chunks, dtype=np.float64):
    params = init_mlp2_params(12, 16, 5, dtype=dtype, seed=3)
    x = rng.standard_normal((n, 12)).astype(dtype)
    y = rng.integers(0, 5, n)
    return params, x, y, da.from_array(x, chunks=(chunks, 12)), da.from_array(y, chunks=chunks)


def assert_steps_equal(got, want, rtol):
    (loss, grads), (loss_ref, grads_ref) = got, want
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss_ref, rel=rtol)
    assert set(grads) == set(grads_ref)
    for key in grads_ref:
        assert isinstance(grads[key], np.ndarray) and grads[key].dtype == grads_ref[key].dtype
        np.testing.assert_allclose(grads[key], grads_ref[key], rtol=rtol, atol=rtol * np.abs(grads_ref[key]).max(),
                                   err_msg=key)


@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_mlp_step_equals_single_process(synchronous, rng, reg):
    """Uneven shards (the last one short), the L2 term counted once."""
    params, x, y, X, Y = mlp_problem(rng, 103, 25)
    assert X.chunks[0][-1] == 3
    assert_steps_equal(md.mlp2_loss_and_grads(params, X, Y, reg, split_every=2),
                       mlp2_loss_and_grads(params, x, y, reg), rtol=1e-12)


def test_mlp_step_float32(synchronous, rng):
    params, x, y, X, Y = mlp_problem(rng, 64, 16, np.float32)
    assert_steps_equal(md.mlp2_loss_and_grads(params, X, Y, 1e-3), mlp2_loss_and_grads(params, x, y, 1e-3), rtol=1e-4)


def test_mlp_step_errors(synchronous, rng):
    params, x, y, X, Y = mlp_problem(rng, 20, 10)
    with pytest.raises(ValueError, match="one label per row"):
        md.mlp2_loss_and_grads(params, X, Y[:-1])
    with pytest.raises(ValueError, match="features"):
        md.mlp2_loss_and_grads(params, X[:, :-1], Y)
    with pytest.raises(ValueError, match="reg"):
        md.mlp2_loss_and_grads(params, X, Y, -1.0)
    with pytest.raises(ValueError, match="labels y must be < C"):
        md.mlp2_loss_and_grads(params, X, Y + 5)


def test_threads_plugin_rejects_bad_counts():
    with pytest.raises(ValueError, match="threads"):
        md.MatgradThreads(0)


def test_import_without_dask_does_not_need_it():
    """``import matgrad`` does not import dask (the extra is optional)."""
    import subprocess
    import sys
    code = "import sys, matgrad; sys.exit(int('dask' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- on a real cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster, set_as_default=False) as c, dask.config.set(scheduler=c):
        yield c


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_on_cluster_matmul(client, rng, dtype):
    a, A = operand(rng, (300, 260), (128, 100), dtype)
    b, B = operand(rng, (260, 190), (90, 64), dtype)
    assert_within_bound(md.matmul(A, B).compute(), a, b)
    a3, A3 = operand(rng, (4, 40, 50), (2, 20, 25), dtype)
    assert_within_bound(md.matmul(A3, B[:50]).compute(), a3, b[:50])
    v, V = operand(rng, (260,), (100,), dtype)
    assert_within_bound(md.matmul(A, V).compute(), a, v)


def test_on_cluster_one_matgrad_thread_per_worker_thread(client, rng):
    _, A = operand(rng, (64, 64), (32, 32), np.float64)
    md.matmul(A, A).compute()
    assert set(client.run(matgrad.get_num_threads).values()) == {1}
    client.register_plugin(md.MatgradThreads(2))
    try:
        assert set(client.run(matgrad.get_num_threads).values()) == {2}
        md.matmul(A, A).compute()  # tasks leave the plugin's count alone
        assert set(client.run(matgrad.get_num_threads).values()) == {2}
    finally:
        client.unregister_worker_plugin(md.MatgradThreads.name)
        client.run(matgrad.set_num_threads, 1)


def test_on_cluster_linear_and_mlp_step(client, rng):
    x, X = operand(rng, (200, 30), (64, 30), np.float64)
    w = rng.standard_normal((30, 20))
    g, G = operand(rng, (200, 20), (64, 20), np.float64)
    np.testing.assert_allclose(md.linear(X, w).compute(), x @ w, rtol=1e-12, atol=1e-12)
    gx, gw, gb = dask.compute(*md.linear_backward(G, X, w))
    np.testing.assert_allclose(gw, x.T @ g, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(gb, g.sum(0), rtol=1e-12, atol=1e-12)
    params, x, y, X, Y = mlp_problem(rng, 203, 50)
    assert_steps_equal(md.mlp2_loss_and_grads(params, X, Y, 0.01), mlp2_loss_and_grads(params, x, y, 0.01), rtol=1e-12)


def test_product_larger_than_the_workers_memory():
    """A 16384² float32 product (A, B and C 1 GiB each) on two workers of 1 GiB each: it
    completes without a worker restart, and sampled tiles and every column sum match float64
    references computed on the same cluster."""
    n, c = 16384, 2048
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",
                      dashboard_address=":0") as cluster, Client(cluster, set_as_default=False) as client:
        workers = set(client.scheduler_info()["workers"])
        A = da.random.default_rng(1).standard_normal((n, n), chunks=c, dtype=np.float32)
        B = da.random.default_rng(2).standard_normal((n, n), chunks=c, dtype=np.float32)
        C = md.matmul(A, B)
        assert A.nbytes + B.nbytes + C.nbytes == 3 << 30
        col = A.astype(np.float64).sum(axis=0)
        col_abs = abs(A).astype(np.float64).sum(axis=0)
        results = client.compute([C.sum(axis=0, dtype=np.float64), da.matmul(col, B.astype(np.float64)),
                                  da.matmul(col_abs, abs(B).astype(np.float64)),
                                  C.blocks[1, 2], A.blocks[1, :], B.blocks[:, 2],
                                  C.blocks[7, 0], A.blocks[7, :], B.blocks[:, 0]])
        sums, sums_ref, sums_mag, c12, a1, b2, c70, a7, b0 = client.gather(results)
        assert set(client.scheduler_info()["workers"]) == workers  # none restarted
    assert_within_bound(c12, a1, b2)
    assert_within_bound(c70, a7, b0)
    # Σ_i C_ij: the product's error (k eps per element) summed over n rows, the sums in float64.
    tol = 3 * n * np.finfo(np.float32).eps * sums_mag
    assert np.all(np.abs(sums - sums_ref) <= tol)


def test_demo_trains_data_parallel_with_the_single_process_curve(capsys):
    """``python -m matgrad demo --dask`` on its own LocalCluster: the same loss curve as the
    single-process training (float64: to rounding), and the accuracy target."""
    import re

    from matgrad import _demo
    code = _demo.main(["--dask", "--workers", "2", "--epochs", "3", "--dtype", "float64", "--no-torch",
                       "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 workers" in out and "OK: held-out accuracy" in out
    diff = float(re.search(r"max \|dask - single process\| over 3 epochs = (\S+)", out).group(1))
    assert diff < 1e-12
