"""Exact Gibbs samples (Wilson) and perturb-and-MAP against exact tree probabilities.

Goodness of fit: Pearson's chi-square of the sample counts over all trees against the exact
probabilities, rejected above the 0.999 quantile of chi2(#trees - 1) (a test at level
alpha = 1e-3; the seeds are fixed, so each test is deterministic and the threshold only
states how surprising a pass or a failure is). Every expected count is >= 5.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import chi2

from ssl_gen.structured import spanning_tree as st

NUM_SAMPLES = 20_000


def tree_ids(samples, trees):
    """Index of each sample in `trees`: (N, n, n) x (T, n, n) -> (N,); every one must match."""
    flat = lambda x: np.packbits(np.asarray(x).reshape(len(x), -1), axis=1)  # (., bytes)
    codes = {row.tobytes(): t for t, row in enumerate(flat(trees))}
    return np.array([codes[row.tobytes()] for row in flat(samples)])


def chi_square(samples, trees, probs):
    counts = np.bincount(tree_ids(samples, trees), minlength=len(trees))
    expected = len(samples) * probs
    assert expected.min() >= 5, "too few samples for the chi-square approximation"
    return np.sum((counts - expected) ** 2 / expected), chi2.ppf(0.999, len(trees) - 1)


def gibbs_probs(theta, trees):
    scores = 0.5 * np.sum(np.where(trees, theta.astype(np.float64), 0.0), axis=(-2, -1))
    return np.exp(scores - logsumexp(scores))


SAMPLERS = {
    "wilson": st.sample,
    "prim": functools.partial(st.perturb_and_map, algorithm="prim"),
    "kruskal": functools.partial(st.perturb_and_map, algorithm="kruskal"),
}


@functools.cache
def batched(name):
    """One jitted sampler per name, vmapped over keys: tests with equal shapes share it."""
    return jax.jit(jax.vmap(SAMPLERS[name], in_axes=(0, None, None)))


def draw(name, theta, mask=None, seed=0, num=NUM_SAMPLES):
    keys = jax.random.split(jax.random.key(seed), num)
    return np.asarray(batched(name)(keys, theta, mask))


def k4_theta():
    rng = np.random.default_rng(0)
    theta = 1.5 * rng.standard_normal((4, 4))
    return ((theta + theta.T) / 2).astype(np.float32)


def test_wilson_samples_match_gibbs_on_k4():
    theta = k4_theta()
    trees = st.enumerate_trees(4)
    stat, threshold = chi_square(draw("wilson", theta), trees, gibbs_probs(theta, trees))
    assert stat < threshold, (stat, threshold)


def test_wilson_samples_match_gibbs_on_a_masked_graph():
    # K_5 minus the edges 0-1, 2-4, 3-4: 5 nodes, 7 edges, 24 spanning trees.
    mask = ~np.eye(5, dtype=bool)
    for i, j in [(0, 1), (2, 4), (3, 4)]:
        mask[i, j] = mask[j, i] = False
    rng = np.random.default_rng(1)
    theta = rng.standard_normal((5, 5))
    theta = np.where(mask, (theta + theta.T) / 2, np.nan).astype(np.float32)
    trees = st.enumerate_trees(5, mask)
    probs = gibbs_probs(np.nan_to_num(theta), trees)
    stat, threshold = chi_square(draw("wilson", theta, mask, seed=1), trees, probs)
    assert stat < threshold, (stat, threshold)


def test_wilson_on_a_disconnected_graph_samples_independent_component_trees():
    # Two triangles {0, 1, 2} and {3, 4, 5}: 3 x 3 = 9 spanning forests.
    mask = np.zeros((6, 6), dtype=bool)
    mask[:3, :3] = mask[3:, 3:] = True
    mask &= ~np.eye(6, dtype=bool)
    theta = np.array(
        [[0, 1, -1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [-1, 0, 0, 0, 0, 0],
         [0, 0, 0, 0, 2, 0], [0, 0, 0, 2, 0, 0.5], [0, 0, 0, 0, 0.5, 0]], np.float32
    )  # fmt: skip
    tri = st.enumerate_trees(3)
    forests = np.zeros((9, 6, 6), dtype=bool)
    for a in range(3):
        for b in range(3):
            forests[3 * a + b, :3, :3], forests[3 * a + b, 3:, 3:] = tri[a], tri[b]
    samples = draw("wilson", theta, mask, seed=2, num=5000)
    assert np.all(st.forest_num_components(samples) == 2)
    stat, threshold = chi_square(samples, forests, gibbs_probs(theta, forests))
    assert stat < threshold, (stat, threshold)


def test_wilson_ends_when_a_bridge_is_out_of_float32_range():
    """Two triangles joined by the edge 2-3. At score -2 the walk crosses it (every tree
    uses it); at -200 its transition probability underflows to 0 and a walk could never
    cross: the edge counts as missing and the sample is a two-tree forest (documented)."""
    mask = np.zeros((6, 6), dtype=bool)
    mask[:3, :3] = mask[3:, 3:] = True
    mask[2, 3] = mask[3, 2] = True
    mask &= ~np.eye(6, dtype=bool)
    theta = np.zeros((6, 6), np.float32)
    for score, components in [(-2.0, 1), (-200.0, 2)]:
        theta[2, 3] = theta[3, 2] = score
        samples = draw("wilson", theta, mask, seed=6, num=5000)  # shapes shared: one compile
        np.testing.assert_array_equal(st.forest_num_components(samples), components)


def test_sample_is_batched_over_graphs_and_max_steps_caps_the_walk():
    theta = jnp.zeros((2, 3, 6, 6))
    trees = st.sample(jax.random.key(3), theta)
    assert trees.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(st.forest_num_components(trees), 1)
    assert len({np.asarray(t).tobytes() for t in trees.reshape(6, 6, 6)}) > 1  # not one key
    capped = st.sample(jax.random.key(3), theta, max_steps=0)
    np.testing.assert_array_equal(st.forest_num_components(capped), 6)  # nothing attached


def test_perturb_and_map_is_the_mst_of_iid_gumbel_weights_not_gibbs():
    """theta = 0 on K_4: Gibbs is uniform (1/16); perturb-and-MAP is the MST of i.i.d. weights,
    1/15 per star and 11/180 per path (Kruskal over the 720 edge orders)."""
    trees = st.enumerate_trees(4)
    samples = draw("prim", np.zeros((4, 4), np.float32), seed=4)
    is_star = trees.sum(axis=-1).max(axis=-1) == 3  # (16,)
    exact = np.where(is_star, 1 / 15, 11 / 180)
    stat, threshold = chi_square(samples, trees, exact)
    assert stat < threshold, (stat, threshold)
    # Stars: 4/15 = 0.267 of the mass instead of 1/4; the frequency's standard error is
    # sqrt(0.25 * 0.75 / 20000) = 0.003, so the two are > 5 standard errors apart.
    star_freq = is_star[tree_ids(samples, trees)].mean()
    assert abs(star_freq - 4 / 15) < 3 * 0.003 < abs(star_freq - 1 / 4)


def test_perturb_and_map_frequencies_differ_from_gibbs():
    theta = k4_theta()
    trees = st.enumerate_trees(4)
    probs = gibbs_probs(theta, trees)
    for algorithm in ("prim", "kruskal"):
        samples = draw(algorithm, theta, seed=5)
        stat, threshold = chi_square(samples, trees, probs)
        assert stat > 5 * threshold, (stat, threshold)  # rejected, by far
        freq = np.bincount(tree_ids(samples, trees), minlength=16) / NUM_SAMPLES
        assert 0.5 * np.abs(freq - probs).sum() > 0.05  # total variation distance


@pytest.mark.parametrize("fn", [st.sample, st.perturb_and_map])
def test_bad_theta_is_a_one_line_error(fn):
    theta = np.zeros((3, 3), np.float32)
    theta[1, 2] = theta[2, 1] = np.inf
    with pytest.raises(ValueError, match=rf"{fn.__name__}: theta\[\(1, 2\)\] is inf"):
        fn(jax.random.key(0), theta)
