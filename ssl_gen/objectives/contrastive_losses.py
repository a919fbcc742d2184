r"""Contrastive losses as pure functions of embeddings or logits (no model, no trainer).

- `nt_xent`: SimCLR's normalized-temperature cross-entropy (Chen, Kornblith, Norouzi &
  Hinton 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
  Eq. 1 and Alg. 1). Two views z1, z2 (N, D) of the same N examples; every one of the 2N
  embeddings is classified against the other 2N - 1 (its own similarity is masked), the
  positive being its other view; the loss averages both directions (all 2N anchors).
- `info_nce_loss`: the InfoNCE loss of CPC (van den Oord, Li & Vinyals 2018, Eq. 4) and
  MoCo (He et al. 2020, Eq. 1): the cross-entropy of picking the positive among a row of
  logits, the positive on the diagonal (CPC: logits[i, j] = f(c_i, z_j), the other batch
  items the negatives) or at index 0 (MoCo: [q.k+, q.queue] / tau).
  `ssl_gen.objectives.mi_bounds.infonce(s) == log N - info_nce_loss(s)` for square s.

Negatives come from whatever rows the caller passes: to use a global batch across devices,
gather the embeddings first (the loss is the same function of the gathered batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POSITIVES = ("diagonal", "first")


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over rows of -log softmax(logits)[label]; -inf logits (masked) are allowed."""
    picked = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def _labels(logits: jax.Array, positive: str) -> jax.Array:
    if positive not in POSITIVES:
        raise ValueError(f"info_nce_loss: positive={positive!r} must be one of {POSITIVES}")
    n, m = logits.shape
    if positive == "diagonal":
        if m < n:
            raise ValueError(f"info_nce_loss: positive='diagonal' needs at least as many "
                             f"columns as rows, got logits of shape {logits.shape}")
        return jnp.arange(n)
    return jnp.zeros((n,), jnp.int32)


def info_nce_loss(logits: jax.Array, positive: str = "diagonal",
                  temperature: float = 1.0) -> jax.Array:
    """InfoNCE: mean cross-entropy of the positive in each row of `logits / temperature`.

    Args:
      logits: (N, M) similarities; row i holds anchor i against M candidates.
      positive: "diagonal" (candidate i is row i's positive; M >= N, the extra columns are
        negatives only) or "first" (candidate 0 is every row's positive, MoCo's layout).
      temperature: divides the logits (1 for logits already scaled).

    Returns:
      The loss, a scalar (>= 0; log M at uniform logits).
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"info_nce_loss: logits must be (N, M), got shape {logits.shape}")
    return _cross_entropy(logits / temperature, _labels(logits, positive))


def contrastive_accuracy(logits: jax.Array, positive: str = "diagonal") -> jax.Array:
    """Fraction of rows whose largest logit is the positive (CPC's per-step accuracy)."""
    logits = jnp.asarray(logits)
    return jnp.mean(jnp.argmax(logits, axis=1) == _labels(logits, positive))


def nt_xent_logits(z1: jax.Array, z2: jax.Array,
                   temperature: float = 0.5) -> tuple[jax.Array, jax.Array]:
    """SimCLR's (2N, 2N) logits and labels: cosine similarities / temperature of the
    concatenated views [z1; z2], -inf on the diagonal (no anchor is its own negative), the
    label of anchor k its other view (k + N mod 2N)."""
    z1, z2 = jnp.asarray(z1), jnp.asarray(z2)
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent: the two views must be (N, D) of one shape, got "
                         f"{z1.shape} and {z2.shape}")
    n = z1.shape[0]
    z = jnp.concatenate([z1, z2], axis=0).astype(jnp.float32)  # (2N, D)
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(z * z, axis=1, keepdims=True), 1e-24))
    logits = (z @ z.T) / temperature  # (2N, 2N) cosine similarities / tau
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    labels = (jnp.arange(2 * n) + n) % (2 * n)
    return logits, labels


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float = 0.5) -> jax.Array:
    r"""SimCLR's NT-Xent loss, both directions.

    With u = [z1; z2] / ||.|| (2N unit vectors) and s_kl = u_k . u_l / tau,

        L = 1/(2N) \sum_k -log( e^{s_{k,p(k)}} / \sum_{l != k} e^{s_{kl}} ),

    p(k) the other view of example k. Each anchor's 2N - 2 negatives are both views of the
    other N - 1 examples.

    Args:
      z1, z2: (N, D) projections of the two views (any scale: they are normalized here).
      temperature: tau (SimCLR: 0.1-0.5; 0.5 for CIFAR-10 in the paper's Table 5).

    Returns:
      The loss, a float32 scalar.
    """
    logits, labels = nt_xent_logits(z1, z2, temperature)
    return _cross_entropy(logits, labels)
