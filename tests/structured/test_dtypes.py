"""Dtypes: every public function of `structured/` keeps its input's precision, in both modes.

With `jax_enable_x64` off (the default) only float32 exists; with it on (`SSL_GEN_X64=1`,
see tests/test_x64.py) float32 input must stay float32 (no silent upcast of user data) and
float64 input computes in float64. Integer outputs (labels, counts) are int32 either way;
trees are boolean.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.structured import chow_liu
from ssl_gen.structured import spanning_tree as st
from tests.jaxpr_dtypes import wide_floats

X64 = jax.config.jax_enable_x64
FLOATS = [jnp.float32] + ([jnp.float64] if X64 else [])
N = 5


def theta_of(dtype, n=N, seed=0):
    t = np.random.default_rng(seed).standard_normal((n, n))
    return jnp.asarray((t + t.T) / 2, dtype)


def path_mask(n=N):
    """A path 0-1-...-(n-2) plus an isolated node n-1: two components."""
    m = np.zeros((n, n), bool)
    i = np.arange(n - 2)
    m[i, i + 1] = m[i + 1, i] = True
    return m


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("algorithm", st.ALGORITHMS)
def test_spanning_trees_are_bool_and_counts_int32(dtype, algorithm):
    w = theta_of(dtype)
    for fn in (st.minimum_spanning_tree, st.maximum_spanning_tree):  # one compilation
        tree, c = fn(w, path_mask(), algorithm=algorithm, return_num_components=True)
        assert tree.dtype == jnp.bool_ and c.dtype == jnp.int32 and int(c) == 2
        assert int(tree.sum()) == 2 * (N - 2)

    tree = st.perturb_and_map(jax.random.key(0), w, algorithm=algorithm)
    assert tree.dtype == jnp.bool_ and int(tree.sum()) == 2 * (N - 1)
    counts = lambda t: (st.forest_num_components(t), st.component_labels(t), st.num_components(t))
    assert [x.dtype for x in jax.eval_shape(counts, tree)] == [jnp.int32] * 3


def test_integer_weights_work():
    w = jnp.asarray(np.arange(N * N).reshape(N, N) % 7)
    tree = st.minimum_spanning_tree(w + w.T)
    assert tree.dtype == jnp.bool_ and int(tree.sum()) == 2 * (N - 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_gibbs_functions_keep_the_dtype(dtype):
    theta = theta_of(dtype)
    mask = path_mask()

    def everything(theta, key):
        out = {}
        for name, m in (("complete", None), ("masked", mask)):
            tree = st.sample(key, theta, m)
            out.update({f"{name} log_partition": st.log_partition(theta, m),
                        f"{name} marginals": st.marginals(theta, m),
                        f"{name} entropy": st.entropy(theta, m),
                        f"{name} log_prob": st.log_prob(theta, tree, m)})
        out["grad"] = jax.grad(lambda t: st.log_partition(t))(theta)
        out["vmap sample"] = jax.vmap(lambda k: st.sample(k, theta))(jax.random.split(key, 3))
        return out

    # Tracing checks every dtype (and every loop carry) without compiling ...
    for name, x in jax.eval_shape(everything, theta, jax.random.key(0)).items():
        expected = jnp.bool_ if "sample" in name else dtype
        assert x.dtype == expected, f"{name}: {x.dtype}, theta {dtype}"
    # ... and one masked log-partition and sample run for real.
    tree = st.sample(jax.random.key(1), theta, mask)
    assert tree.dtype == jnp.bool_ and int(st.forest_num_components(tree)) == 2
    log_z = st.log_partition(theta, mask)
    assert log_z.dtype == dtype and bool(jnp.isfinite(log_z))


@pytest.mark.parametrize("dtype", FLOATS)
def test_chow_liu_keeps_the_dtype(dtype):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((50, N)), dtype)

    def fit(x):
        mi = chow_liu.gaussian_mutual_information(x)
        tree = chow_liu.chow_liu_tree(mi)
        return mi, tree, chow_liu.tree_score(tree, mi)

    dtypes = [y.dtype for y in jax.eval_shape(fit, x)]
    assert dtypes == [dtype, jnp.bool_, dtype]


def test_float32_programs_have_no_float64_inside():
    """Every kernel on float32 scores traces to a float32 program: under x64 a hard-coded
    default dtype would upcast silently (in the default mode this holds trivially)."""
    theta = theta_of(jnp.float32)
    mask = path_mask()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((50, N)), jnp.float32)
    programs = {
        "prim": lambda t, k: st.minimum_spanning_tree(t, mask, return_num_components=True),
        "kruskal": lambda t, k: st.maximum_spanning_tree(t, mask, algorithm="kruskal"),
        "perturb_and_map": lambda t, k: st.perturb_and_map(k, t),
        "sample": lambda t, k: st.sample(k, t, mask),
        "log_partition": lambda t, k: st.log_partition(t, mask),
        "marginals": lambda t, k: jax.grad(lambda u: jnp.sum(st.marginals(u) ** 2))(t),
        "entropy": lambda t, k: st.entropy(t),
        "log_prob": lambda t, k: st.log_prob(t, st.maximum_spanning_tree(t), None),
        "chow_liu": lambda t, k: chow_liu.tree_score(
            chow_liu.chow_liu_tree(chow_liu.gaussian_mutual_information(x)), t),
    }
    key = jax.random.key(0)
    for name, fn in programs.items():
        assert not wide_floats(jax.make_jaxpr(fn)(theta, key), jnp.float32), name


@pytest.mark.skipif(not X64, reason="float64 exists only with jax_enable_x64")
def test_float64_resolves_what_float32_cannot():
    # Weights 1 and 1 + 1e-12 are equal in float32 (the tie would go to the smaller edge
    # index, 0-1) and distinct in float64: the float64 tree must skip the heavier edge 0-1.
    w = np.ones((3, 3))
    w[0, 1] = w[1, 0] = 1.0 + 1e-12
    for algorithm in st.ALGORITHMS:
        tree = np.asarray(st.minimum_spanning_tree(jnp.asarray(w), algorithm=algorithm))
        assert not tree[0, 1] and tree[0, 2] and tree[1, 2], algorithm
    # A path's log-partition is the sum of its scores, even with score gaps (200 nats) far
    # beyond float32's range (its scaled elimination underflows past ~85 nats).
    theta = np.zeros((3, 3))
    theta[0, 1] = theta[1, 0] = 200.0
    mask = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
    np.testing.assert_allclose(st.log_partition(jnp.asarray(theta), mask), 200.0, rtol=1e-12)
    mu = st.marginals(jnp.asarray(theta), mask)
    np.testing.assert_allclose(mu, mask.astype(float), atol=1e-12)
