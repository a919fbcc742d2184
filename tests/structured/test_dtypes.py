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
    for fn in (st.minimum_spanning_tree, st.maximum_spanning_tree):
        tree, c = fn(w, path_mask(), algorithm=algorithm, return_num_components=True)
        assert tree.dtype == jnp.bool_ and c.dtype == jnp.int32 and int(c) == 2
        assert int(tree.sum()) == 2 * (N - 2)
    key = jax.random.key(0)
    tree = st.perturb_and_map(key, w, algorithm=algorithm)
    assert tree.dtype == jnp.bool_ and int(st.forest_num_components(tree)) == 1
    assert st.forest_num_components(tree).dtype == jnp.int32
    assert st.component_labels(tree).dtype == jnp.int32
    assert st.num_components(tree).dtype == jnp.int32


def test_integer_weights_work():
    w = jnp.asarray(np.arange(N * N).reshape(N, N) % 7)
    w = w + w.T
    for algorithm in st.ALGORITHMS:
        tree = st.minimum_spanning_tree(w, algorithm=algorithm)
        assert tree.dtype == jnp.bool_ and int(tree.sum()) == 2 * (N - 1)


@pytest.mark.parametrize("dtype", FLOATS)
def test_gibbs_functions_keep_the_dtype(dtype):
    theta = theta_of(dtype)
    mask = path_mask()
    for m in (None, mask):
        log_z = st.log_partition(theta, m)
        mu = st.marginals(theta, m)
        h = st.entropy(theta, m)
        tree = st.sample(jax.random.key(1), theta, m)
        lp = st.log_prob(theta, tree, m)
        assert tree.dtype == jnp.bool_
        for x in (log_z, mu, h, lp):
            assert x.dtype == dtype and bool(jnp.all(jnp.isfinite(x)))
    grad = jax.grad(lambda t: st.log_partition(t))(theta)
    assert grad.dtype == dtype
    # Under jit and vmap too (the loops' carries keep one dtype).
    keys = jax.random.split(jax.random.key(2), 3)
    trees = jax.jit(jax.vmap(lambda k: st.sample(k, theta)))(keys)
    assert trees.shape == (3, N, N) and trees.dtype == jnp.bool_


@pytest.mark.parametrize("dtype", FLOATS)
def test_chow_liu_keeps_the_dtype(dtype):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((50, N)), dtype)
    mi = chow_liu.gaussian_mutual_information(x)
    tree = chow_liu.chow_liu_tree(mi)
    assert mi.dtype == dtype and tree.dtype == jnp.bool_
    assert chow_liu.tree_score(tree, mi).dtype == dtype


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
    # Weights 1 and 1 + 1e-12 are equal in float32 (so the tie goes to the smaller edge
    # index) and distinct in float64: the float64 tree must use the strictly lighter edge.
    w = np.ones((3, 3))
    w[0, 1] = w[1, 0] = 1.0 + 1e-12  # edge 0-1 (index 1) heavier than 0-2 (index 2) by 1e-12
    for algorithm in st.ALGORITHMS:
        t64 = np.asarray(st.minimum_spanning_tree(jnp.asarray(w), algorithm=algorithm))
        t32 = np.asarray(st.minimum_spanning_tree(jnp.asarray(w, jnp.float32), algorithm=algorithm))
        assert not t64[0, 1] and t64[0, 2] and t64[1, 2]
        assert t32[0, 1] and t32[0, 2] and not t32[1, 2]
    # A path's log-partition is the sum of its scores, even with score gaps (200 nats) far
    # beyond float32's range (its scaled elimination underflows past ~85 nats).
    theta = np.zeros((3, 3))
    theta[0, 1] = theta[1, 0] = 200.0
    mask = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)
    np.testing.assert_allclose(st.log_partition(jnp.asarray(theta), mask), 200.0, rtol=1e-12)
    mu = st.marginals(jnp.asarray(theta), mask)
    np.testing.assert_allclose(mu, mask.astype(float), atol=1e-12)
