"""64-bit mode: structured/ and estimators/ work with `jax_enable_x64` on as well as off.

`SSL_GEN_X64=1 pytest ...` runs any tests with x64 on (tests/conftest.py sets the flag
before any array exists). The default suite runs a subset in that mode here, in a
subprocess (the flag is process-wide): the dtype tests, which trace every public function
and estimator factory on float32 and float64 problems (float32 must stay float32, float64
must compute in float64), and a few cheap correctness tests that execute the kernels with
x64 on. The whole of tests/structured and tests/estimators passes in both modes:

    SSL_GEN_X64=1 .venv/bin/python -m pytest tests/structured tests/estimators
"""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parents[1]

# The cheapest tests that cover each public function in x64 mode. The dtype tests trace all
# of them (every estimator factory on every distribution family, float32 and float64) and
# run the MST, perturb-and-MAP, Wilson and the log-partition; the others execute: MST (both
# algorithms) against scipy, the matrix-tree functions against enumeration, Wilson against
# exact frequencies, and estimators on float64 problems (the test problems are default-dtype
# arrays, so float64 in this mode) against exact gradients.
X64_SUBSET = [
    "tests/test_x64.py::test_mode_follows_the_environment",
    "tests/structured/test_dtypes.py",
    "tests/estimators/test_dtypes.py",
    "tests/structured/test_mst.py::test_minimum_matches_scipy_and_networkx[7-prim]",
    "tests/structured/test_mst.py::test_minimum_matches_scipy_and_networkx[7-kruskal]",
    "tests/structured/test_gibbs.py::test_log_partition_marginals_log_prob_entropy_match_enumeration",
    "tests/structured/test_sampling.py::test_wilson_samples_match_gibbs_on_k4",
    "tests/estimators/test_exact.py::test_matches_brute_force",
    "tests/estimators/test_score_function.py::test_mean_matches_exact_gradient[gaussian]",
    "tests/estimators/test_rebar.py::test_unbiased_for_any_control_variate[bernoulli]",
]


def test_mode_follows_the_environment():
    assert jax.config.jax_enable_x64 == conftest.X64
    assert jnp.zeros(()).dtype == (jnp.float64 if conftest.X64 else jnp.float32)


@pytest.mark.slow
@pytest.mark.skipif(conftest.X64, reason="this process already runs with x64 on")
def test_structured_and_estimators_pass_with_x64_on():
    env = {**os.environ, "SSL_GEN_X64": "1"}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *X64_SUBSET]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"x64 subset failed (SSL_GEN_X64=1):\n{tail}"
    assert " passed" in tail and "skipped" not in tail, tail
