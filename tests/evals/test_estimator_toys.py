"""The estimator toy runner: each toy's runlocal writes a report with every column, JSON rows
and PNG plots; unbiased estimators' measured bias sits within the noise of the closed-form
(or enumerated) truth, which checks the toys' closed forms too."""

import json
import math

import numpy as np
import pytest

from ssl_gen.reports import estimator_report
from ssl_gen.runners import estimator_toys as run_estimator_toys
from tests.train.conftest import load_config

CONFIG = "experiments/estimator_toys.py"
HEADERS = [header for _, header in estimator_report.COLUMNS]


@pytest.mark.parametrize("toy", ["gaussian", "bernoulli", "categorical"])
def test_runlocal_writes_the_report(toy, tmp_path):
    config = load_config(CONFIG, f"{toy},runlocal")
    assert config.runner == run_estimator_toys.RUNNER and config.toy == toy
    out = run_estimator_toys.run(config, str(tmp_path))

    report = (tmp_path / "report.md").read_text()
    assert all(f"## {title}" in report for title in out.tables)
    full = [t for t in out.tables.values() if "| f evals |" in t]  # the per-estimator tables
    assert full, "no table with the full columns"
    for table in full:
        header = table.splitlines()[0]
        assert all(f" {h} |" in header for h in HEADERS), header
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert set(rows) == set(out.rows) and all(rows.values())
    for path in out.plots:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path

    for section in out.rows.values():
        for row in section:
            if row.get("unbiased") and "bias" in row:
                # 5 noise floors (the floor is the sd of the bias norm's noise, roughly);
                # 1e-6 for float32 rounding of zero-variance estimates.
                assert row["bias"] < 5 * row["bias_floor"] + 1e-6, (toy, row["name"], row)


def _normal_moment(n: int) -> float:
    """E[eps^n] for eps ~ N(0, 1): (n - 1)!! for even n, 0 for odd n."""
    return 0.0 if n % 2 else float(np.prod(np.arange(n - 1, 0, -2)))


def _moments(poly: np.polynomial.Polynomial) -> tuple[float, float]:
    """(variance, standard error of a variance estimated from R = 1 replica) of poly(eps):
    the se of R replicas' variance is this / sqrt(R), sqrt(mu4 - var^2) for large R."""
    expect = lambda p: sum(c * _normal_moment(n) for n, c in enumerate(p.coef))
    centred = poly - expect(poly)
    var = expect(centred**2)
    return var, math.sqrt(expect(centred**4) - var**2)


def _quadratic_gradients(name: str, a: float, s: float):
    """One-sample gradients of E[(x - k)^2], x = mu + s eps, a = mu - k, as polynomials in
    eps: (d/dmu, d/dsigma). Pathwise: 2 (x - k) dx/dtheta. Score function: f times the score,
    eps / s for mu and (eps^2 - 1) / s for sigma."""
    eps = np.polynomial.Polynomial([0.0, 1.0])
    f = (a + s * eps) ** 2
    if name == "pathwise":
        return 2 * (a + s * eps), 2 * (a + s * eps) * eps
    return f * eps / s, f * (eps**2 - 1) / s


def test_gaussian_per_parameter_variances_match_closed_form(tmp_path):
    """The Gaussian toy's var d/dmu and var d/dsigma columns (the README's table) against the
    closed-form variances of the pathwise and score-function gradients of a quadratic f."""
    config = load_config(CONFIG, "gaussian,runlocal")
    loc, scale, ks = 0.5, 1.5, (0.5, -0.5)  # a = mu - k = 0 and 1
    config.num_replicas = num_replicas = 20_000
    config.gaussian.update(loc=loc, scale=scale, reference_k=ks[0])
    config.gaussian.ks = dict(quadratic=ks)
    config.gaussian.estimators = {"pathwise": dict(name="pathwise", num_samples=1),
                                  "score_function": dict(name="score_function", num_samples=1)}
    out = run_estimator_toys.run(config, str(tmp_path))
    rows = out.rows["gaussian_quadratic"]
    assert len(rows) == 4
    for row in rows:
        grads = _quadratic_gradients(row["name"], loc - row["k"], scale)
        for field, poly in zip(("var_loc", "var_scale"), grads, strict=True):
            var, se = _moments(poly)
            se /= math.sqrt(num_replicas)
            assert abs(row[field] - var) < 5 * se, (row["name"], row["k"], field, row[field],
                                                    var, se)
        assert row["variance"] == pytest.approx(row["var_loc"] + row["var_scale"])
    table = next(iter(out.tables.values()))
    assert "| var d/dmu | var d/dsigma |" in table.splitlines()[0]
