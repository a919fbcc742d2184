"""benchmarks/bench_estimators.py without timing anything: the reference mode's one-line
hint when optax 0.1.8's venv is missing, the call-by-call alternation, and the closed-form
gradients the reference mode checks both sides against (Gauss-Hermite quadrature)."""

import jax
import numpy as np
import pytest

from benchmarks import bench_estimators as bench
from benchmarks.optax_reference import FUNCTIONS, problem


def test_reference_mode_without_its_venv_says_how_to_make_it(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--reference", "--reference_python", str(tmp_path / "python")])
    message = str(exit_info.value)
    assert "\n" not in message
    assert "python3 -m venv /tmp/optax018-venv" in message
    assert "pip install optax==0.1.8" in message


def test_interleaved_alternates_call_by_call():
    order = []
    t_a, t_b = bench.interleaved(lambda i: order.append(("a", i)) or 1.0,
                                 lambda i: order.append(("b", i)) or 2.0, 4)
    assert order == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2), ("b", 3),
                     ("a", 3)]
    assert bench.paired_ratio(t_a, t_b) == 0.5


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_reference_closed_forms_match_quadrature(name):
    """f is a sum over coordinates of the same function g, so per coordinate
    d/dmean E g(m + s x) = E g'(z) and d/dlog_scale = s E[g'(z) x], x ~ N(0, 1)."""
    f, truth = FUNCTIONS[name]
    mean, log_scale = (np.asarray(a, np.float64) for a in problem(10))
    s = np.exp(log_scale)
    x, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    g = lambda z: np.asarray(jax.vmap(f)(np.asarray(z, np.float32)[:, None]), np.float64)
    h = 1e-3  # g' by central differences of f on one coordinate
    for i in range(len(mean)):
        z = mean[i] + s[i] * x
        slope = (g(z + h) - g(z - h)) / (2 * h)
        want = (np.sum(w * slope), s[i] * np.sum(w * slope * x))
        got = [float(t[i]) for t in truth(mean, s)]
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4, err_msg=f"{name}[{i}]")
