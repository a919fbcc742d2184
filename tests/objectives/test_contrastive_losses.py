"""The contrastive losses against direct NumPy computations (loops, float64, no
vectorization): NT-Xent with its self-similarity masked, both directions, on unnormalized
inputs; InfoNCE with the positive on the diagonal (extra negative columns) or at index 0.
Tolerance 1e-5 relative (float32 against float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.objectives import contrastive_losses as cl


def _nt_xent_loop(z1, z2, tau):
    """SimCLR Alg. 1 written out: l(k, m) = -log e^{s_km} / sum_{l != k} e^{s_kl}, averaged
    over the 2N ordered positive pairs (k, m) = (i, N + i) and (N + i, i)."""
    z = [np.asarray(v, np.float64) for v in list(z1) + list(z2)]
    z = [v / math.sqrt(sum(c * c for c in v)) for v in z]
    n2 = len(z)
    n = n2 // 2

    def sim(a, b):
        return sum(float(p) * float(q) for p, q in zip(z[a], z[b], strict=True)) / tau

    total = 0.0
    for k in range(n2):
        positive = (k + n) % n2
        denominator = sum(math.exp(sim(k, m)) for m in range(n2) if m != k)
        total += -math.log(math.exp(sim(k, positive)) / denominator)
    return total / n2


def _info_nce_loop(logits, positive):
    total = 0.0
    for i, row in enumerate(np.asarray(logits, np.float64)):
        label = i if positive == "diagonal" else 0
        total += -(row[label] - math.log(sum(math.exp(v) for v in row)))
    return total / len(logits)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_the_loop(tau):
    rng = np.random.default_rng(0)
    # Rows of very different norms: the loss must normalize them.
    z1 = rng.normal(size=(5, 7)) * rng.uniform(0.1, 10, size=(5, 1))
    z2 = z1 + 0.5 * rng.normal(size=(5, 7))
    got = float(cl.nt_xent(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), tau))
    assert got == pytest.approx(_nt_xent_loop(z1, z2, tau), rel=1e-5)


def test_nt_xent_masks_the_self_similarity_and_symmetrizes():
    rng = np.random.default_rng(1)
    z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    logits, labels = cl.nt_xent_logits(jnp.asarray(z1), jnp.asarray(z2), 0.5)
    assert logits.shape == (8, 8) and np.all(np.isneginf(np.diagonal(np.asarray(logits))))
    assert list(np.asarray(labels)) == [4, 5, 6, 7, 0, 1, 2, 3]
    # Unmasked, every anchor's own similarity (1 / tau, the largest) would dominate the
    # denominator: a different, larger loss.
    unmasked = np.where(np.eye(8, dtype=bool), 2.0, np.asarray(logits))
    unmasked_loss = np.mean([math.log(np.exp(r).sum()) - r[lab]
                             for r, lab in zip(unmasked, np.asarray(labels), strict=True)])
    assert unmasked_loss > float(cl.nt_xent(z1, z2, 0.5)) + 0.1
    # Both directions: swapping the views leaves the loss unchanged.
    assert float(cl.nt_xent(z2, z1, 0.5)) == pytest.approx(float(cl.nt_xent(z1, z2, 0.5)),
                                                           rel=1e-6)


def test_nt_xent_gradient_is_finite_and_perfect_views_beat_random():
    rng = np.random.default_rng(2)
    z1 = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    grads = jax.grad(lambda a: cl.nt_xent(a, z1 + 0.1, 0.2))(z1)
    assert np.all(np.isfinite(np.asarray(grads)))
    # Identical views of orthogonal embeddings: the positive (1 / tau) beats every
    # negative (0): loss = log(1 + (2N - 2) e^{-1/tau}).
    eye = jnp.eye(6, 8)
    assert float(cl.nt_xent(eye, eye, 0.2)) == pytest.approx(math.log(1 + 10 * math.exp(-5)),
                                                            rel=1e-5)


def test_info_nce_positive_on_the_diagonal_with_extra_negatives():
    logits = np.random.default_rng(3).normal(size=(4, 9)).astype(np.float32)
    got = float(cl.info_nce_loss(jnp.asarray(logits), "diagonal"))
    assert got == pytest.approx(_info_nce_loop(logits, "diagonal"), rel=1e-5)
    assert float(cl.info_nce_loss(logits, "diagonal", temperature=0.5)) == pytest.approx(
        _info_nce_loop(logits / 0.5, "diagonal"), rel=1e-5)


def test_info_nce_positive_first_is_mocos_layout():
    logits = np.random.default_rng(4).normal(size=(5, 11)).astype(np.float32)
    got = float(cl.info_nce_loss(jnp.asarray(logits), "first", temperature=0.2))
    assert got == pytest.approx(_info_nce_loop(logits / 0.2, "first"), rel=1e-5)
    # Uniform logits: log M whatever the layout.
    assert float(cl.info_nce_loss(jnp.zeros((3, 11)), "first")) == pytest.approx(
        math.log(11), rel=1e-6)


def test_contrastive_accuracy():
    logits = jnp.asarray([[3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 0.0, 1.0]])
    assert float(cl.contrastive_accuracy(logits, "diagonal")) == pytest.approx(2 / 3)
    assert float(cl.contrastive_accuracy(logits, "first")) == pytest.approx(1 / 3)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="positive='middle'"):
        cl.info_nce_loss(jnp.zeros((2, 2)), "middle")
    with pytest.raises(ValueError, match="at least as many columns"):
        cl.info_nce_loss(jnp.zeros((3, 2)), "diagonal")
    with pytest.raises(ValueError, match="two views"):
        cl.nt_xent(jnp.zeros((3, 2)), jnp.zeros((4, 2)))
