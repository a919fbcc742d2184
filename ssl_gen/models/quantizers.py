r"""Quantizers for discrete autoencoders (VQ-VAE, VQGAN), one interface.

Every quantizer is a Flax module called as `quantizer(z, *, train, mask=None) ->
(z_q, aux)`: z (..., D) holds one vector per position in its last axis; z_q has z's shape
and carries the straight-through gradient (dz_q/dz = I: the decoder's gradient reaches the
encoder unchanged, Bengio et al. 2013; van den Oord et al. 2017, Sec. 3.2). `mask`, of shape
z.shape[:-1] (1 for real positions, 0 for padding), weights losses and usage counts.

`aux` holds
- `indices` (z.shape[:-1], int32): the code of each vector;
- `loss`: what the objective adds to its reconstruction loss (0 for FSQ);
- `commitment` = mean ||z_e - sg[e]||² and `codebook_loss` = mean ||sg[z_e] - e||² (means
  over vectors and dimensions), for the VQ quantizers;
- `counts` (K,): assignments per code in this call (over the *global* batch: under `jit`
  with a batch-sharded input, a sum over the batch axis is a sum over every device);
  `perplexity` = exp H(counts / sum) and `codes_used` = #{k : counts_k > 0} of this call;
- `dead_fraction` (EMA only): the fraction of codes whose EMA count is below
  `dead_threshold`; `entropy` when `entropy_weight > 0`.

Quantizers (`QUANTIZERS`):

- `VectorQuantizer` ("vq"): van den Oord et al. (2017), eq. 3. The codebook is a parameter
  trained by the loss ||sg[z_e] - e||² + beta ||z_e - sg[e]||², beta = 0.25 on the
  *commitment* term (the paper's value and taming-transformers' default; diffusers' VQModel
  put beta on the other term, which the tests pin). Both terms are computed from the
  selected codes *before* the straight-through substitution (after it, z_q = z_e in value
  and both would vanish).
- `EMAVectorQuantizer` ("ema"): the codebook follows exponential moving averages of the
  assignment counts N_k and of the sums of the assigned vectors m_k (van den Oord et al.
  2017, App. A.1), with the zero-debiasing of Sonnet's `VectorQuantizerEMA` (hidden
  averages start at 0 and are divided by 1 - decay^t) and Laplace smoothing of the counts:
  e_k = m_k / ((N_k + eps) / (N + K eps) N), N = sum_k N_k. A step quantizes with the
  codebook it starts with and then updates it. The statistics are the Flax collection
  `"vq_stats"` (never `params`): training applies the model with `mutable=["vq_stats"]`, the
  trainer stores them in `state["collections"]` and checkpoints them. The loss is
  beta * commitment only. Options:
  - dead-code restart (`restart=True`; Dhariwal et al. 2020, Jukebox, Sec. 3.1): after the
    update, a code whose debiased EMA count is below `dead_threshold` is re-seeded with a
    vector drawn from the batch (rng stream "vq"), and its statistics are reset to a count
    of `dead_threshold` holding that vector (so the next update starts from it);
  - k-means initialization (`kmeans_init=True`): at the first training step the codebook
    is replaced by `kmeans_iters` Lloyd iterations on that batch's vectors before it
    quantizes them;
- both VQ quantizers: `lookup_dim` (project D -> lookup_dim before the lookup and back
  after it) and `l2_normalize` (look up l2-normalized vectors in an l2-normalized codebook),
  the factorized, l2-normalized codes of Yu et al. (2022), ViT-VQGAN, Sec. 3.2;
  `entropy_weight` adds the entropy penalty (as in MaskGIT/MAGVIT's tokenizers, Yu et al.
  2023, eq. 5): with soft assignments p_i = softmax(-||z_i - e||² / temperature), the mean
  per-vector entropy E_i H(p_i) (minimized: confident assignments) minus the entropy of the
  mean assignment H(E_i p_i) (maximized: every code used).
- `FSQ` ("fsq"): finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE Made
  Simple", App. A.1): each of d = len(levels) channels is bounded to L_i levels by tanh and
  rounded (straight-through); the codebook is the implicit grid of prod(levels) codes, with
  no loss and nothing to collapse. For even L the bound shifts by atanh(offset / half_l) so
  that bound(0) = 0 exactly (the paper's listing wrote tan, off by ~4e-4 at L = 4; the
  corrected implementations use atanh). half_l = (L - 1)(1 + eps) / 2 keeps the atanh
  finite for L = 2 (the listing's (1 - eps) gives atanh of a number > 1 there), though
  L = 2 stays lopsided (z = 0 sits on a level, the other needs z < -3.8): prefer L >= 3.
  Inputs with D != d are projected to d and back.

Distances are ||z||² - 2 z.e + ||e||²: one (N, D) x (D, K) matmul, no (N, K, D) tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

STATS = "vq_stats"  # the EMA quantizer's collection
RNG = "vq"  # the rng stream of restarts and k-means


# --- shared pieces -------------------------------------------------------------------------

def squared_distances(z: jax.Array, codebook: jax.Array) -> jax.Array:
    """||z_i - e_k||² for z (N, D) and codebook (K, D): (N, K), as ||z||² - 2 z.e + ||e||²."""
    return (jnp.sum(z**2, -1, keepdims=True) - 2.0 * z @ codebook.T
            + jnp.sum(codebook**2, -1)[None, :])


def straight_through(z: jax.Array, z_q: jax.Array) -> jax.Array:
    """z_q in value, the identity in gradient (w.r.t. z; none reaches z_q)."""
    return z + jax.lax.stop_gradient(z_q - z)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x**2, -1, keepdims=True), eps**2))


def usage(counts: jax.Array) -> dict[str, jax.Array]:
    """Perplexity exp H(p), p = counts / sum(counts), and the number of codes with counts > 0."""
    p = counts / jnp.maximum(jnp.sum(counts), 1e-12)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return {"perplexity": jnp.exp(entropy), "codes_used": jnp.sum(counts > 0).astype(jnp.float32)}


def _weights(z: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Per-vector weights (N,) for z (..., D): the mask flattened, or ones."""
    n = math.prod(z.shape[:-1])
    if mask is None:
        return jnp.ones((n,), jnp.float32)
    return jnp.broadcast_to(mask, z.shape[:-1]).reshape(n).astype(jnp.float32)


def _wmean(per_vector: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.sum(per_vector * w) / jnp.maximum(jnp.sum(w), 1.0)


def vq_losses(z: jax.Array, e: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(codebook_loss, commitment) for vectors z (N, D) and their selected codes e (N, D):
    mean ||sg[z] - e||² and mean ||z - sg[e]||², over vectors (weights w) and dimensions."""
    d = z.shape[-1]
    codebook = _wmean(jnp.sum((jax.lax.stop_gradient(z) - e) ** 2, -1), w) / d
    commitment = _wmean(jnp.sum((z - jax.lax.stop_gradient(e)) ** 2, -1), w) / d
    return codebook, commitment


def entropy_penalty(dist: jax.Array, w: jax.Array, temperature: float) -> jax.Array:
    """E_i H(p_i) - H(E_i p_i) with p_i = softmax(-dist_i / temperature); dist (N, K)."""
    logp = jax.nn.log_softmax(-dist / temperature, axis=-1)
    p = jnp.exp(logp)
    per_sample = _wmean(-jnp.sum(p * logp, -1), w)
    mean_p = jnp.sum(p * w[:, None], 0) / jnp.maximum(jnp.sum(w), 1.0)
    marginal = -jnp.sum(mean_p * jnp.log(jnp.maximum(mean_p, 1e-12)))
    return per_sample - marginal


def _draw(key: jax.Array, w: jax.Array, k: int) -> jax.Array:
    """k indices of weighted vectors (w > 0), without replacement when there are enough."""
    n = w.shape[0]
    return jax.random.choice(key, n, (k,), replace=n < k, p=w / jnp.maximum(jnp.sum(w), 1e-12))


def kmeans(key: jax.Array, x: jax.Array, w: jax.Array, k: int, iters: int) -> jax.Array:
    """Lloyd's k-means on the weighted rows of x (N, D), started at k drawn rows: (k, D).
    A centre that loses all its points keeps its position."""
    centres = x[_draw(key, w, k)]

    def step(_, c):
        assign = jax.nn.one_hot(jnp.argmin(squared_distances(x, c), -1), k) * w[:, None]
        n = jnp.sum(assign, 0)
        return jnp.where(n[:, None] > 0, assign.T @ x / jnp.maximum(n, 1e-12)[:, None], c)

    return jax.lax.fori_loop(0, iters, step, centres)


class _VQBase(nn.Module):
    """The lookup shared by the VQ quantizers: projection, normalization, argmin."""

    num_codes: int = 512
    beta: float = 0.25
    lookup_dim: int | None = None
    l2_normalize: bool = False
    entropy_weight: float = 0.0
    entropy_temperature: float = 1.0

    def _check(self):
        if not (isinstance(self.num_codes, int) and self.num_codes >= 2):
            raise ValueError(f"quantizer: num_codes must be an int >= 2, got {self.num_codes!r}")
        if self.beta < 0 or self.entropy_weight < 0 or self.entropy_temperature <= 0:
            raise ValueError("quantizer: beta and entropy_weight must be >= 0 and "
                             f"entropy_temperature > 0, got {self.beta}, {self.entropy_weight}, "
                             f"{self.entropy_temperature}")

    def _down(self, z):  # (N, D) -> (N, d): the lookup space
        if self.lookup_dim is not None:
            z = nn.Dense(self.lookup_dim, name="project_in")(z)
        return l2_normalize(z) if self.l2_normalize else z

    def _up(self, zq, dim):  # (N, d) -> (N, D)
        if self.lookup_dim is not None:
            zq = nn.Dense(dim, name="project_out")(zq)
        return zq

    def _finish(self, z, zl, codebook, dist, w, codebook_weight: float):
        """(z_q, aux) from the lookup-space vectors zl (N, d) and the codebook (K, d)."""
        idx = jnp.argmin(dist, -1)
        e = codebook[idx]  # (N, d)
        codebook_loss, commitment = vq_losses(zl, e, w)
        loss = codebook_weight * codebook_loss + self.beta * commitment
        aux = {"codebook_loss": codebook_loss, "commitment": commitment}
        if self.entropy_weight > 0:
            aux["entropy"] = entropy_penalty(dist, w, self.entropy_temperature)
            loss = loss + self.entropy_weight * aux["entropy"]
        zq = self._up(straight_through(zl, e), z.shape[-1])
        counts = jnp.sum(jax.nn.one_hot(idx, self.num_codes) * w[:, None], 0)
        aux.update(loss=loss, indices=idx.reshape(z.shape[:-1]).astype(jnp.int32),
                   counts=counts, **usage(counts))
        return zq.reshape(z.shape), aux


def _uniform(scale: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, minval=-scale, maxval=scale)


def _project_out(variables, e):
    """The `project_out` Dense applied by hand (for `codes`, outside the compact call)."""
    dense = variables["params"]["project_out"]
    return e @ dense["kernel"] + dense["bias"]


class VectorQuantizer(_VQBase):
    """VQ with a learned codebook: loss = codebook_loss + beta * commitment (module docstring).

    The codebook `params/codebook` (K, d) starts uniform in [-1/K, 1/K] (taming's init)."""

    @nn.compact
    def __call__(self, z, *, train: bool = False, mask=None):
        del train
        self._check()
        flat = z.reshape(-1, z.shape[-1])
        w = _weights(z, mask)
        zl = self._down(flat)
        codebook = self.param("codebook", _uniform(1.0 / self.num_codes),
                              (self.num_codes, zl.shape[-1]))
        codebook = l2_normalize(codebook) if self.l2_normalize else codebook
        return self._finish(z, zl, codebook, squared_distances(zl, codebook), w, 1.0)

    def codes(self, indices):
        """The quantized vectors (..., D) of `indices` (the decoder's input)."""
        codebook = self.variables["params"]["codebook"]
        codebook = l2_normalize(codebook) if self.l2_normalize else codebook
        e = codebook[indices.reshape(-1)]
        if self.lookup_dim is not None:
            e = _project_out(self.variables, e)
        return e.reshape((*indices.shape, -1))


class EMAVectorQuantizer(_VQBase):
    """VQ with an EMA codebook in the `"vq_stats"` collection (module docstring).

    Collection entries: `codebook` (K, d), `count` (K,) and `sum` (K, d) the *hidden*
    (biased) EMAs of N_k and m_k, `steps` the number of updates (the debiasing exponent):
    the debiased values are hidden / (1 - decay^steps).
    """

    decay: float = 0.99
    epsilon: float = 1e-5
    restart: bool = False
    dead_threshold: float = 1.0
    kmeans_init: bool = False
    kmeans_iters: int = 10

    def _stats(self, d: int):
        k = self.num_codes
        init = lambda: _uniform(1.0 / k)(self.make_rng("params"), (k, d))
        return (self.variable(STATS, "codebook", init),
                self.variable(STATS, "count", lambda: jnp.zeros((k,), jnp.float32)),
                self.variable(STATS, "sum", lambda: jnp.zeros((k, d), jnp.float32)),
                self.variable(STATS, "steps", lambda: jnp.zeros((), jnp.int32)))

    def _debias(self, steps):
        return jnp.where(steps > 0, 1.0 - jnp.asarray(self.decay, jnp.float32) ** steps, 1.0)

    @nn.compact
    def __call__(self, z, *, train: bool = False, mask=None):
        self._check()
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"ema quantizer: decay must be in (0, 1), got {self.decay!r}")
        flat = z.reshape(-1, z.shape[-1])
        w = _weights(z, mask)
        zl = self._down(flat)
        codebook_v, count_v, sum_v, steps_v = self._stats(zl.shape[-1])
        update = train and not self.is_initializing()
        if update and not self.is_mutable_collection(STATS):
            raise ValueError(f"ema quantizer: train=True updates the codebook; apply the model "
                             f"with mutable=[{STATS!r}] (or train=False)")
        codebook = codebook_v.value
        stop = jax.lax.stop_gradient
        if update and self.kmeans_init:
            key = jax.random.fold_in(self.make_rng(RNG), 1)
            codebook = jax.lax.cond(
                steps_v.value == 0,
                lambda: kmeans(key, stop(zl), w, self.num_codes, self.kmeans_iters),
                lambda: codebook)
        if self.l2_normalize:
            codebook = l2_normalize(codebook)
        zq, aux = self._finish(z, zl, codebook, squared_distances(zl, codebook), w, 0.0)
        if update:  # the batch was quantized with `codebook`; now move it
            assign = jax.nn.one_hot(aux["indices"].reshape(-1), self.num_codes) * w[:, None]
            self._update(stop(zl), w, assign, codebook_v, count_v, sum_v, steps_v)
        count = count_v.value / self._debias(steps_v.value)
        aux["dead_fraction"] = jnp.mean((count < self.dead_threshold).astype(jnp.float32))
        return zq, aux

    def _update(self, zl, w, assign, codebook_v, count_v, sum_v, steps_v):
        """One EMA step on the assignments `assign` (N, K) of zl (N, d), then restarts."""
        decay = self.decay
        steps = steps_v.value + 1
        count = decay * count_v.value + (1 - decay) * jnp.sum(assign, 0)  # (K,)
        total = decay * sum_v.value + (1 - decay) * assign.T @ zl  # (K, d)
        debias = self._debias(steps)
        n_avg, m_avg = count / debias, total / debias
        n = jnp.sum(n_avg)
        smoothed = (n_avg + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        codebook = m_avg / smoothed[:, None]
        if self.restart:
            dead = n_avg < self.dead_threshold
            fresh = zl[_draw(self.make_rng(RNG), w, self.num_codes)]  # (K, d)
            codebook = jnp.where(dead[:, None], fresh, codebook)
            count = jnp.where(dead, self.dead_threshold * debias, count)
            total = jnp.where(dead[:, None], fresh * (self.dead_threshold * debias), total)
        codebook_v.value, count_v.value, sum_v.value, steps_v.value = codebook, count, total, steps

    def codes(self, indices):
        """The quantized vectors (..., D) of `indices` (the decoder's input)."""
        codebook = self.variables[STATS]["codebook"]
        codebook = l2_normalize(codebook) if self.l2_normalize else codebook
        e = codebook[indices.reshape(-1)]
        if self.lookup_dim is not None:
            e = _project_out(self.variables, e)
        return e.reshape((*indices.shape, -1))


class FSQ(nn.Module):
    """Finite scalar quantization over `levels` (module docstring); K = prod(levels).

    Code i's index is sum_c digit_c * prod(levels[:c]) with digit_c in 0..L_c - 1 (the
    reference implementation's basis). Codes are in [-1, 1]: digit / (L // 2) - 1.
    """

    levels: Sequence[int] = (8, 5, 5, 5)
    eps: float = 1e-3

    @property
    def num_codes(self) -> int:
        return int(np.prod(self.levels))

    def _levels(self) -> np.ndarray:
        levels = np.asarray(self.levels)
        if levels.ndim != 1 or levels.size == 0 or (levels < 2).any():
            raise ValueError(f"fsq: levels must be a non-empty sequence of ints >= 2, got "
                             f"{tuple(self.levels)!r}")
        return levels

    def bound(self, z):
        """Each channel c squashed into L_c integers' reach: (..., d) -> (..., d)."""
        levels = self._levels()
        # (1 + eps): keeps offset / half_l < 1 for L = 2, so atanh stays finite.
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = np.where(levels % 2 == 0, 0.5, 0.0)
        shift = np.arctanh(offset / half_l)
        return jnp.tanh(z + shift) * half_l - offset

    def quantize(self, z):
        """The codes in [-1, 1] (straight-through rounding), (..., d)."""
        half_width = self._levels() // 2
        bounded = self.bound(z)
        return straight_through(bounded, jnp.round(bounded)) / half_width

    def codes_to_indices(self, codes):
        levels = self._levels()
        half_width = levels // 2
        digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
        basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
        return jnp.sum(digits * basis, -1).astype(jnp.int32)

    def indices_to_codes(self, indices):
        levels = self._levels()
        half_width = levels // 2
        basis = np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)
        digits = (indices[..., None] // basis) % levels
        return (digits - half_width) / half_width

    @nn.compact
    def __call__(self, z, *, train: bool = False, mask=None):
        del train
        levels = self._levels()
        d = len(levels)
        flat = z.reshape(-1, z.shape[-1])
        w = _weights(z, mask)
        project = z.shape[-1] != d
        zl = nn.Dense(d, name="project_in")(flat) if project else flat
        codes = self.quantize(zl)
        idx = self.codes_to_indices(codes)
        zq = nn.Dense(z.shape[-1], name="project_out")(codes) if project else codes
        counts = jnp.sum(jax.nn.one_hot(idx, self.num_codes) * w[:, None], 0)
        aux = {"loss": jnp.zeros((), jnp.float32),
               "indices": idx.reshape(z.shape[:-1]), "counts": counts, **usage(counts)}
        return zq.reshape(z.shape), aux

    def codes(self, indices):
        """The quantized vectors (..., D) of `indices`."""
        e = self.indices_to_codes(indices).astype(jnp.float32)
        if "params" in self.variables and "project_out" in self.variables["params"]:
            e = _project_out(self.variables, e)
        return e


QUANTIZERS = {"vq": VectorQuantizer, "ema": EMAVectorQuantizer, "fsq": FSQ}
