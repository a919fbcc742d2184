"""The MI-bounds runner: its closed forms against SciPy and Monte Carlo, its config checks'
one-line errors, and the runlocal run writing its tables, rows, estimates and plots
(the optimal-critic InfoNCE below log N, a trained InfoNCE too)."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy import stats

from ssl_gen.runners import mi_bounds as runner
from tests.train.conftest import ROOT, load_config

CONFIG = "experiments/mi_bounds.py"


def test_mi_and_rho_are_inverse_and_sampling_has_that_correlation():
    for mi in (2.0, 10.0):
        rho = runner.mi_to_rho(mi, 20)
        assert runner.rho_to_mi(rho, 20) == pytest.approx(mi, rel=1e-12)
    rho = runner.mi_to_rho(2.0, 3)
    x, y = runner.sample(jax.random.key(0), rho, 3, 20_000)
    corr = np.corrcoef(np.asarray(x[:, 1]), np.asarray(y[:, 1]))[0, 1]
    assert corr == pytest.approx(rho, abs=4 * (1 - rho**2) / math.sqrt(20_000))  # ~4 se
    assert abs(np.corrcoef(np.asarray(x[:, 0]), np.asarray(y[:, 2]))[0, 1]) < 4 / math.sqrt(
        20_000)


def test_log_density_ratio_against_scipy_and_its_mean_is_the_mi():
    dim, rho = 2, runner.mi_to_rho(1.5, 2)
    x, y = runner.sample(jax.random.key(1), rho, dim, 5)
    cov = np.block([[np.eye(dim), rho * np.eye(dim)], [rho * np.eye(dim), np.eye(dim)]])
    joint = stats.multivariate_normal(np.zeros(2 * dim), cov)
    marginal = stats.multivariate_normal(np.zeros(dim), np.eye(dim))
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    want = np.array([[joint.logpdf(np.concatenate([xi, yj])) - marginal.logpdf(xi)
                      - marginal.logpdf(yj) for yj in y64] for xi in x64])
    np.testing.assert_allclose(np.asarray(runner.log_density_ratio(x, y, rho)), want,
                               rtol=1e-5, atol=1e-5)
    # E_p[log r] = I: 50k pairs, within 4 standard errors.
    x, y = runner.sample(jax.random.key(2), rho, dim, 50_000)
    diag = jax.vmap(lambda a, b: runner.log_density_ratio(a[None], b[None], rho)[0, 0])(x, y)
    diag = np.asarray(diag, np.float64)
    assert diag.mean() == pytest.approx(1.5, abs=4 * diag.std() / math.sqrt(diag.size))


@pytest.mark.parametrize("override,message", [
    ({"critics": "separable,jont"}, "config.critics='separable,jont': each must be one of"),
    ({"bounds.alpha_0_5.alpha": 1.5}, "config.bounds.alpha_0_5.alpha=1.5 must be in [0, 1]"),
    ({"bounds.nwj.bound": "mine"}, "config.bounds.nwj.bound='mine' is not one of"),
    ({"steps_per_mi": 0}, "config.steps_per_mi=0 must be an int >= 1"),
    ({"mis": (2.0, -1.0)}, "must be true MIs in nats"),
    ({"runner": "estimator_toys"}, "not 'mi_bounds'"),
])
def test_bad_settings_are_one_line_errors(override, message, tmp_path):
    config = load_config(CONFIG, "runlocal")
    for key, value in override.items():
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    with pytest.raises(runner.RunnerError) as e:
        runner.run(config, str(tmp_path))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not os.listdir(tmp_path)  # nothing ran


@pytest.mark.slow
def test_runlocal_writes_tables_rows_estimates_and_plots(tmp_path):
    config = load_config(CONFIG, "runlocal")
    assert config.runner == runner.RUNNER
    out = runner.run(config, str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert all(f"## {title}" in text for title in out.tables)
    trained, optimal = out.tables.values()
    kinds, names = runner.critic_kinds(config), list(config.bounds)
    for kind in kinds:
        for name in names:
            assert f"| {kind} | {name} |" in trained
    assert all(f"I = {m:g}" in trained.splitlines()[0] for m in config.mis)
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert len(rows["trained"]) == len(kinds) * len(names) * len(config.mis)
    assert all(np.isfinite(r["mean"]) and r["nonfinite"] == 0 for r in rows["trained"])
    log_n = math.log(config.batch_size)
    # InfoNCE can never exceed log N, trained or optimal.
    assert all(r["mean"] <= log_n + 1e-4 for r in rows["trained"] if r["bound"] == "infonce")
    best = [r for r in rows["optimal"] if r["bound"] == "infonce"]
    assert len(best) == len(config.mis) and all(r["mean"] <= log_n + 1e-4 for r in best)
    assert f"{log_n:.2f}" in optimal
    estimates = np.load(tmp_path / "estimates.npz")
    assert estimates[f"joint/{names[0]}"].shape == (len(config.mis), config.steps_per_mi)
    assert {os.path.basename(p) for p in out.plots} == {
        "estimates_separable.png", "estimates_joint.png", "estimate_vs_true.png"}
    for path in out.plots:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path


@pytest.mark.slow
def test_the_launcher_prints_the_config_and_one_line_errors(tmp_path):
    base = [sys.executable, "-m", "ssl_gen.runners.mi_bounds",
            "--config=experiments/mi_bounds.py:runlocal"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for cmd in (base + ["--print_config"],
                         base + ["--config.critics=jont", f"--workdir={tmp_path / 'w'}"],
                         base + ["--config.stepz=3", f"--workdir={tmp_path / 'w'}"])]
    (printed, _), (_, bad_value), (_, typo) = (p.communicate(timeout=600) for p in procs)
    assert procs[0].returncode == 0 and json.loads(printed)["runner"] == "mi_bounds"
    lines = bad_value.strip().splitlines()
    assert procs[1].returncode == 1 and len(lines) == 1, bad_value
    assert lines[0].startswith("error: config.critics='jont': each must be one of")
    assert procs[2].returncode == 2 and "unknown key 'stepz'" in typo
    assert not (tmp_path / "w").exists()
