"""The Chow-Liu runner: runlocal writes a report with every column, JSON rows and PNG plots;
on an easy instance the exact and score-function estimators learn the Chow-Liu tree (and
theta = 0, the untrained mode, does not: the check can fail); the helpers' math."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.runners import chow_liu as run_chow_liu
from ssl_gen.structured import chow_liu as cl
from ssl_gen.structured import spanning_tree as st
from tests.train.conftest import load_config

CONFIG = "experiments/chow_liu.py"


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory):
    """One runlocal run of every estimator on the easy instance (~25 s, compile-bound)."""
    config = load_config(CONFIG, "easy,runlocal")
    assert config.runner == run_chow_liu.RUNNER
    config.steps = 30
    workdir = tmp_path_factory.mktemp("chow_liu")
    return config, workdir, run_chow_liu.run(config, str(workdir))


@pytest.mark.slow  # the runlocal run of every estimator (~30 s)
def test_runlocal_writes_the_report(easy_run):
    config, workdir, out = easy_run
    report = (workdir / "report.md").read_text()
    assert all(f"## {title}" in report for title in out.tables)
    for columns in (run_chow_liu.RESULT_COLUMNS, run_chow_liu.VARIANCE_COLUMNS):
        headers = [h for _, h in columns]
        assert any(all(f" {h} |" in line for h in headers) for line in report.splitlines())
    assert "Total variation to the Gibbs distribution" in report
    rows = json.loads((workdir / "rows.json").read_text())
    assert [r["name"] for r in rows["results"]] == list(config.estimators)
    for row in rows["results"]:
        for field, _ in run_chow_liu.RESULT_COLUMNS:
            value = row[field]
            assert isinstance(value, str) or np.isfinite(value), (row["name"], field)
        assert 0 <= row["precision_cl"] <= 1 and row["f_argmax"] <= row["f_chow_liu"] + 1e-6
    # The K4 table: 16 trees whose Gibbs probabilities sum to one.
    assert len(rows["perturb_and_map"]) == 16
    assert sum(r["gibbs"] for r in rows["perturb_and_map"]) == pytest.approx(1.0, abs=1e-5)
    assert {p.rsplit("/", 1)[-1] for p in out.plots} == {"objective.png", "variance.png"}
    for path in out.plots:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path
    # Unbiased estimators' mean gradient sits within the noise of the true gradient.
    for row in rows["variance"]:
        if row["name"] in ("score_loo", "exact"):
            assert row["bias"] < 5 * row["bias_floor"] + 1e-5, row


@pytest.mark.slow  # the runlocal run of every estimator (~30 s)
def test_easy_instance_exact_and_score_function_recover_chow_liu(easy_run):
    _, _, out = easy_run
    results = {r["estimator"]: r for r in out.rows["results"]}
    assert {"exact", "score_function"} <= set(results)
    chow_liu = out.rows["problem"]["chow_liu"]
    # Not trivial: the untrained mode (theta = 0, ties broken by edge index) misses edges.
    zeros = jnp.zeros(chow_liu.shape)
    assert cl.edge_precision_recall(st.maximum_spanning_tree(zeros), chow_liu)[0] < 1.0
    for name in ("exact", "score_function"):
        row = results[name]
        assert row["precision_cl"] == 1.0 and row["recall_cl"] == 1.0, (name, row)
        assert row["f_argmax"] == pytest.approx(row["f_chow_liu"], rel=1e-5)
        curve = row["curve"]["objective"]
        assert curve[-1] > curve[0], (name, curve)  # training raised J


def test_random_tree_is_a_uniform_spanning_tree():
    seen = set()
    for k in jax.random.split(jax.random.key(0), 250):
        tree = cl.random_tree(k, 4)
        assert np.array_equal(tree, tree.T) and tree.sum() == 6  # n - 1 edges, no self-loop
        seen.add(tree.tobytes())
    assert all(int(st.num_components(np.frombuffer(t, bool).reshape(4, 4))) == 1 for t in seen)
    assert len(seen) == 16  # every one of the 4^2 labelled trees (P(miss one) < 2e-6)


def test_gaussian_mutual_information_and_chow_liu_tree():
    # A path 0-1-2-3 with correlations 0.9, -0.8, 0.7: corr(0, 2) = -0.72 etc.
    tree = np.zeros((4, 4), bool)
    for i, j in [(0, 1), (1, 2), (2, 3)]:
        tree[i, j] = tree[j, i] = True
    r = np.zeros((4, 4))
    r[0, 1], r[1, 2], r[2, 3] = 0.9, -0.8, 0.7
    r = r + r.T
    x = cl.random_tree_gaussian(jax.random.key(0), tree, 200_000, r)
    corr = np.corrcoef(np.asarray(x), rowvar=False)
    np.testing.assert_allclose(corr[0, 2], 0.9 * -0.8, atol=0.01)
    np.testing.assert_allclose(corr[0, 3], 0.9 * -0.8 * 0.7, atol=0.01)
    mi = np.asarray(cl.gaussian_mutual_information(x))
    np.testing.assert_allclose(mi[0, 1], -0.5 * np.log(1 - 0.81), rtol=0.02)
    assert np.all(np.diag(mi) == 0) and np.allclose(mi, mi.T)
    np.testing.assert_array_equal(np.asarray(cl.chow_liu_tree(mi)), tree)
    # tree_score: the sum of I over the tree's edges, linear in the adjacency.
    expected = mi[0, 1] + mi[1, 2] + mi[2, 3]
    assert float(cl.tree_score(tree, mi)) == pytest.approx(expected, rel=1e-6)
    assert cl.edge_precision_recall(tree, tree) == (1.0, 1.0)
    star = np.zeros((4, 4), bool)
    star[0, 1:] = star[1:, 0] = True
    assert cl.edge_precision_recall(star, tree) == (1 / 3, 1 / 3)


def test_random_tree_gaussian_rejects_a_non_tree():
    with pytest.raises(ValueError, match="spanning tree"):
        cl.random_tree_gaussian(jax.random.key(0), np.ones((3, 3), bool), 10)
