"""Quantizers (ssl_gen.models.quantizers) against the formulas they implement.

The EMA step is compared with a NumPy transcription of Sonnet's update (zero-debiased
EMAs, Laplace-smoothed counts, quantization with the pre-update codebook); the VQ loss's
gradients pin beta on the commitment side; the straight-through path is the identity for
the encoder and nothing for the codebook; a restart touches exactly the dead codes; FSQ's
indices and codes are inverse maps over the whole implicit codebook.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import quantizers as q


def _apply_train(module, variables, z, key=0, mask=None):
    """One training call (jitted: one compile instead of one per op)."""
    fn = jax.jit(lambda v, z, k, m: module.apply(v, z, train=True, mask=m, rngs={q.RNG: k},
                                                 mutable=[q.STATS]))
    (zq, aux), new = fn(variables, z, jax.random.key(key), mask)
    return zq, aux, {**variables, **new}


def _np_ema_step(stats, z, decay, eps):
    """One update of Sonnet's VectorQuantizerEMA in NumPy (hidden EMAs from zero, debiased
    by 1 - decay^t, Laplace smoothing); returns (new stats, indices from the old codebook)."""
    cb, count, total, t = stats
    d = (z**2).sum(1)[:, None] - 2 * z @ cb.T + (cb**2).sum(1)[None]
    idx = d.argmin(1)
    onehot = np.eye(len(cb))[idx]
    t = t + 1
    count = count - (count - onehot.sum(0)) * (1 - decay)
    total = total - (total - onehot.T @ z) * (1 - decay)
    n_avg, m_avg = count / (1 - decay**t), total / (1 - decay**t)
    n = n_avg.sum()
    smoothed = (n_avg + eps) / (n + len(cb) * eps) * n
    return (m_avg / smoothed[:, None], count, total, t), idx


def test_ema_step_matches_a_numpy_reference_with_debiasing():
    k, dim, decay, eps = 6, 3, 0.9, 1e-5
    module = q.EMAVectorQuantizer(num_codes=k, decay=decay, epsilon=eps)
    variables = module.init(jax.random.key(0), jnp.zeros((1, dim)))
    s = variables[q.STATS]
    stats = (np.asarray(s["codebook"], np.float64), np.zeros(k), np.zeros((k, dim)), 0)
    rng = np.random.default_rng(0)
    for step in range(3):
        z = rng.normal(size=(40, dim)).astype(np.float32) * 0.02  # near the small init
        old_cb = stats[0]
        stats, idx = _np_ema_step(stats, z.astype(np.float64), decay, eps)
        zq, aux, variables = _apply_train(module, variables, jnp.asarray(z))
        np.testing.assert_array_equal(aux["indices"], idx)
        np.testing.assert_allclose(zq, old_cb[idx], rtol=1e-5, atol=1e-7)  # pre-update codes
        s = variables[q.STATS]
        assert int(s["steps"]) == step + 1
        np.testing.assert_allclose(s["count"], stats[1], rtol=1e-5)
        np.testing.assert_allclose(s["sum"], stats[2], rtol=1e-4, atol=1e-8)
        np.testing.assert_allclose(s["codebook"], stats[0], rtol=1e-4, atol=1e-7)
    # Debiasing matters here: after one step the debiased average is the batch statistic
    # itself, the biased one a tenth of it.
    assert aux["codes_used"] >= 2


def test_beta_multiplies_the_commitment_term_not_the_codebook_term():
    """d loss / d z_e = 2 beta (z_e - e) / (N D) and d loss / d e_k = 2 sum_{i: k} (e_k - z_i)
    / (N D): beta on the encoder's side (diffusers' swapped version fails both)."""
    k, dim, n, beta = 5, 4, 12, 0.25
    module = q.VectorQuantizer(num_codes=k, beta=beta)
    z = jax.random.normal(jax.random.key(1), (n, dim))
    params = module.init(jax.random.key(2), z)

    def loss(p, z):
        return module.apply(p, z)[1]["loss"]

    g_params, g_z = jax.grad(loss, argnums=(0, 1))(params, z)
    aux = module.apply(params, z)[1]
    cb = np.asarray(params["params"]["codebook"])
    e = cb[np.asarray(aux["indices"])]
    np.testing.assert_allclose(g_z, 2 * beta * (np.asarray(z) - e) / (n * dim), rtol=1e-5,
                               atol=1e-7)
    expect = np.zeros_like(cb)
    np.add.at(expect, np.asarray(aux["indices"]), 2 * (e - np.asarray(z)) / (n * dim))
    np.testing.assert_allclose(g_params["params"]["codebook"], expect, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(aux["loss"], aux["codebook_loss"] + beta * aux["commitment"],
                               rtol=1e-6)


@pytest.mark.parametrize("kind", ["vq", "ema", "fsq"])
def test_the_encoder_gets_gradient_only_through_the_straight_through_path(kind):
    """With the loss terms left out, d <g, z_q> / dz = g exactly (the identity) and the
    codebook gets nothing from the decoder's side. FSQ: the rounding is the identity in
    gradient, so the gradient is that of its smooth bound, bound(z) / (L // 2)."""
    kw = {"fsq": dict(levels=(3, 4))}.get(kind, dict(num_codes=8))
    module = q.QUANTIZERS[kind](**kw)
    z = jax.random.normal(jax.random.key(3), (2, 3, 2)) * 0.1
    g = jax.random.normal(jax.random.key(4), z.shape)
    variables = module.init(jax.random.key(5), z)

    def through(params, z):
        zq, _ = module.apply({**variables, **params}, z)
        return jnp.sum(g * zq)

    params = {"params": variables.get("params", {})}
    g_params, g_z = jax.grad(through, argnums=(0, 1))(params, z)
    if kind == "fsq":
        half = np.asarray(kw["levels"]) // 2
        g = jax.grad(lambda z: jnp.sum(g * module.bound(z) / half))(z)
    np.testing.assert_allclose(g_z, g, rtol=1e-6)
    for leaf in jax.tree.leaves(g_params):
        np.testing.assert_array_equal(leaf, 0.0)
    # In value, z_q is the selected code, not z.
    zq, aux = module.apply(variables, z)
    np.testing.assert_allclose(zq, module.apply(variables, aux["indices"], method=module.codes),
                               rtol=1e-6, atol=1e-7)


def test_fsq_indices_and_codes_are_inverse_over_the_whole_codebook():
    module = q.FSQ(levels=(5, 4, 3, 6))
    k = module.num_codes
    assert k == 360
    codes = module.indices_to_codes(jnp.arange(k))
    assert codes.shape == (k, 4)
    np.testing.assert_array_equal(module.codes_to_indices(codes), np.arange(k))
    assert len({tuple(c) for c in np.asarray(codes).tolist()}) == k  # all distinct
    assert float(jnp.abs(codes).max()) <= 1.0
    # Every quantized vector is a grid code, and its index maps back to it.
    z = jax.random.normal(jax.random.key(6), (4000, 4)) * 2
    zq = module.quantize(z)
    np.testing.assert_allclose(module.indices_to_codes(module.codes_to_indices(zq)), zq,
                               atol=1e-6)
    # Each channel reaches each of its levels (so, by the mixed radix, every index is hit).
    sweep = jnp.linspace(-6, 6, 2001)
    for c, levels in enumerate(module.levels):
        z = jnp.zeros((len(sweep), 4)).at[:, c].set(sweep)
        assert len(np.unique(np.asarray(module.quantize(z))[:, c])) == levels
    # The atanh shift puts z = 0 exactly on a level for even L (tan misses by ~4e-4).
    np.testing.assert_allclose(module.bound(jnp.zeros(4)), 0.0, atol=1e-6)
    two = q.FSQ(levels=(2,))  # offset / half_l < 1 thanks to the (1 + eps) scale
    assert np.isfinite(np.asarray(two.bound(jnp.zeros(1)))).all()


def test_a_restart_resets_exactly_the_dead_codes():
    """Codes 0-3 get the batch, codes 4-7 nothing: after the step the live codes' statistics
    are the plain EMA update; each dead code holds a batch vector, with its debiased count
    reset to the threshold and its sum to that vector times it."""
    k, decay, thr = 8, 0.9, 1.0
    kw = dict(num_codes=k, decay=decay, dead_threshold=thr)
    centres = np.array([[1, 1], [-1, 1], [1, -1], [-1, -1]], np.float32) * 2
    cb = np.concatenate([centres, np.full((4, 2), 50.0, np.float32)
                         + np.arange(4)[:, None]])
    t = 4
    debias_old = 1 - decay**t
    count = np.array([5, 5, 5, 5, 0.1, 0.1, 0.1, 0.1], np.float32) * debias_old
    variables = {q.STATS: {"codebook": jnp.asarray(cb), "count": jnp.asarray(count),
                           "sum": jnp.asarray(cb * (count / debias_old)[:, None] * debias_old),
                           "steps": jnp.asarray(t, jnp.int32)}}
    rng = np.random.default_rng(1)
    z = jnp.asarray(np.repeat(centres, 6, 0) + 0.1 * rng.normal(size=(24, 2)), jnp.float32)
    _, _, plain = _apply_train(q.EMAVectorQuantizer(**kw), variables, z)
    _, _, fresh = _apply_train(q.EMAVectorQuantizer(**kw, restart=True), variables, z)
    p, r = plain[q.STATS], fresh[q.STATS]
    debias = 1 - decay ** (t + 1)
    dead = np.asarray(p["count"]) / debias < thr
    np.testing.assert_array_equal(dead, [False] * 4 + [True] * 4)
    for name in ("codebook", "count", "sum"):
        np.testing.assert_array_equal(np.asarray(r[name])[~dead], np.asarray(p[name])[~dead])
    rows = np.asarray(r["codebook"])[dead]
    zs = np.asarray(z)
    for row in rows:  # each is one of the batch vectors
        assert np.min(np.abs(zs - row).sum(1)) < 1e-6
    np.testing.assert_allclose(np.asarray(r["count"])[dead], thr * debias, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(r["sum"])[dead], rows * thr * debias, rtol=1e-6)
    # Deterministic from the rng; another key draws other vectors.
    _, _, again = _apply_train(q.EMAVectorQuantizer(**kw, restart=True), variables, z)
    np.testing.assert_array_equal(again[q.STATS]["codebook"], r["codebook"])
    _, _, other = _apply_train(q.EMAVectorQuantizer(**kw, restart=True), variables, z, key=9)
    assert not np.array_equal(other[q.STATS]["codebook"], r["codebook"])


def test_kmeans_init_finds_separated_clusters_at_the_first_step():
    """Four tight clusters, 8 codes from a tiny random init: the first batch is quantized
    with k-means codes (small error, each cluster has a code at its centre); without
    k-means it is quantized with the init (error ~ the clusters' squared radius, 9)."""
    centres = np.array([[3, 0], [0, 3], [-3, 0], [0, -3]], np.float32)
    z = jnp.asarray(np.repeat(centres, 10, 0)
                    + 0.05 * np.random.default_rng(2).normal(size=(40, 2)), jnp.float32)
    errors, codebooks = {}, {}
    for init in (True, False):
        module = q.EMAVectorQuantizer(num_codes=8, kmeans_init=init, kmeans_iters=5)
        _, aux, variables = _apply_train(module, module.init(jax.random.key(0), z), z)
        errors[init] = float(aux["commitment"])
        codebooks[init] = np.asarray(variables[q.STATS]["codebook"])
    assert errors[True] < 0.01 < 1.0 < errors[False]
    near = np.sqrt(((centres[:, None] - codebooks[True][None]) ** 2).sum(-1)).min(1)
    assert near.max() < 0.1, near


def test_l2_normalized_low_dimensional_codes_and_the_entropy_penalty():
    module = q.VectorQuantizer(num_codes=8, lookup_dim=3, l2_normalize=True,
                               entropy_weight=0.5, entropy_temperature=0.1)
    z = jax.random.normal(jax.random.key(7), (16, 6))
    params = module.init(jax.random.key(8), z)
    _, aux = module.apply(params, z)
    zl = q.l2_normalize(z @ params["params"]["project_in"]["kernel"]
                        + params["params"]["project_in"]["bias"])
    cb = q.l2_normalize(params["params"]["codebook"])
    dist = np.asarray(((zl[:, None] - cb[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(aux["indices"], dist.argmin(1))
    p = np.asarray(jax.nn.softmax(-dist / 0.1, -1))
    ent = lambda x: -(x * np.log(np.maximum(x, 1e-30))).sum(-1)
    np.testing.assert_allclose(aux["entropy"], ent(p).mean() - ent(p.mean(0)), rtol=1e-4)
    np.testing.assert_allclose(aux["loss"], aux["codebook_loss"] + 0.25 * aux["commitment"]
                               + 0.5 * aux["entropy"], rtol=1e-5)


def test_training_without_the_mutable_collection_is_a_one_line_error():
    module = q.EMAVectorQuantizer(num_codes=4)
    z = jnp.zeros((3, 2))
    variables = module.init(jax.random.key(0), z)
    with pytest.raises(ValueError, match="mutable=\\['vq_stats'\\]"):
        module.apply(variables, z, train=True)
