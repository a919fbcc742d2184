r"""MaskGIT: masked-token training and iterative parallel decoding (Chang et al. 2022,
"MaskGIT: Masked Generative Image Transformer", Sec. 3.1-3.3; reference rules from
google-research/maskgit, `maskgit/libml/mask_schedule.py` and `parallel_decode.py`).

The model is a bidirectional transformer over N code positions with a [MASK] token
(`ssl_gen.models.gpt` with `bidirectional=True`): logits[:, i] is p(y_i | the unmasked
tokens). Pure jax here (no Flax): the mask sampler of the training objective and the decoder.

Mask schedule (Sec. 3.3): gamma(r) = cos(pi/2 · r), r in [0, 1] (`mask_ratio`), decreasing
from 1 (all masked) to 0 (none).

Training (Sec. 3.2, Eq. 1), `training_mask`: per sample draw u ~ U(0, 1), mask
ceil(gamma(u) · N) positions chosen uniformly at random (at least one, at most N); the loss
is the cross entropy on the masked positions only (`ssl_gen.objectives.masked_prior`).

Decoding (Sec. 3.2), `decode`: start with every position masked (or from `init`, a buffer
with some tokens given and the rest `mask_id`), M_0 = the masked count per sample. Step
t = 0 .. T-1:

1. one forward pass on the buffer; draw a token at every masked position from the filtered
   logits (`ssl_gen.models.sampling.filter_logits`: temperature, top-k, top-p);
2. confidence of a newly drawn token = log p(drawn token) under that filtered distribution
   (for temperature 0, the untempered softmax) + tau_t · Gumbel noise, with the annealed
   choice temperature tau_t = choice_temperature · (1 - (t+1)/T) (the reference's
   `mask_by_random_topk`, decaying linearly to 0 at the last step); tokens fixed at earlier
   steps get confidence +inf, so they are never re-masked;
3. re-mask the n_t least confident positions, n_t = floor(M_0 · gamma((t+1)/T)), clamped as
   the reference does to [1, (masked before this step) - 1] before the last step (each step
   fixes at least one token and leaves one to the next), and n_{T-1} = 0: nothing is masked
   after the last step. Exactly n_t are re-masked (ranks by a stable argsort; among equal
   confidences the lower position is re-masked first), where the reference's
   `confidence < cut_off` re-masks fewer on ties. The floors are exact (float64 on the
   host, `schedule`).

The loop is a `lax.scan` of T steps (one trace, jit-friendly); `num_steps` must be in
[1, N] (at T = N one token is fixed per step). Each sample's confidence noise is
independent; the confidence at step t uses the model's logits given the step's buffer,
never a token's earlier confidence. Cost: T
forward passes per batch of samples (8 for the 16 digit codes, against 16 for the
autoregressive sampler), every position of every pass is predicted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.models import sampling


def mask_ratio(r):
    """gamma(r) = cos(pi/2 · r): the fraction of tokens masked at progress r in [0, 1]."""
    return jnp.cos(0.5 * math.pi * jnp.asarray(r, jnp.float32))


def training_mask(key: jax.Array, batch: int, length: int) -> jax.Array:
    """Boolean (batch, length), True = masked: ceil(gamma(u) · N) uniform positions per row.

    u ~ U(0, 1) per row; the count is clipped to [1, N] (gamma(u) > 0 almost surely, so the
    lower clip only guards the float rounding)."""
    ku, kp = jax.random.split(key)
    u = jax.random.uniform(ku, (batch, 1))
    count = jnp.clip(jnp.ceil(mask_ratio(u) * length), 1, length)  # (B, 1)
    # A uniformly random subset of that size: the `count` smallest of iid uniform scores.
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(kp, (batch, length)), -1), -1)
    return rank < count


def schedule(num_masked, num_steps: int, length: int | None = None):
    """Masked counts after each step, (T, ...) int32, for M_0 = `num_masked` (...) at start.

    n_t = floor(M_0 · gamma((t+1)/T)), clamped to [1, n_{t-1} - 1] for t < T-1 (n_{-1} =
    M_0), and n_{T-1} = 0 (module docstring); where M_0 < T (a partly given buffer) some
    steps fix nothing, as in the reference.
    The floors are taken in float64 on the host, for every M_0 in [0, length] (`length`
    defaults to max M_0, which must then be concrete), and looked up: in float32,
    cos(pi/3) = 0.49999997 and floor(256 · gamma(8/12)) would be 127, not 128."""
    if length is None:
        length = int(np.max(num_masked))
    m = np.arange(length + 1)
    table, prev = [], m
    for t in range(num_steps):
        if t == num_steps - 1:
            n = np.zeros_like(m)
        else:
            n = np.floor(m * math.cos(0.5 * math.pi * (t + 1) / num_steps)).astype(np.int64)
            n = np.where(m > 0, np.maximum(1, np.minimum(prev - 1, n)), 0)
        table.append(n)
        prev = n
    table = jnp.asarray(np.stack(table), jnp.int32)  # (T, length + 1)
    return table[:, jnp.asarray(num_masked, jnp.int32)]


def check_args(num_steps, choice_temperature, length: int | None = None) -> None:
    """One-line ValueError for bad decoding arguments (before anything is traced)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or num_steps < 1 or (length is not None and num_steps > length):
        raise ValueError(f"maskgit: num_steps must be an int in [1, {length or 'length'}] "
                         f"(at most one step per token), got {num_steps!r}")
    if isinstance(choice_temperature, bool) or not isinstance(
            choice_temperature, (int, float)) or not choice_temperature >= 0:
        raise ValueError(f"maskgit: choice_temperature must be a number >= 0, got "
                         f"{choice_temperature!r}")


def decode(logits_fn: Callable[[jax.Array], jax.Array], key: jax.Array, *, mask_id: int,
           num_samples: int | None = None, length: int | None = None,
           init: jax.Array | None = None, num_steps: int = 8, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None,
           choice_temperature: float = 4.5, history: bool = False):
    """MaskGIT iterative decoding (module docstring).

    Args:
      logits_fn: tokens (N, L) int32 in [0, mask_id] -> logits (N, L, V), V <= mask_id.
      key: the PRNG key; step t uses `fold_in(key, t)`.
      mask_id: the [MASK] token's id.
      num_samples, length: the all-masked start buffer's shape (when `init` is None).
      init: or a start buffer (N, L) int: given tokens, `mask_id` where to decode.
      num_steps: T, in [1, L]. temperature, top_k, top_p: the token filters
        (`ssl_gen.models.sampling`; temperature 0 = argmax).
      choice_temperature: the Gumbel noise scale of the confidence at step 0 (the
        reference's 4.5), annealed linearly to 0.
      history: also return the buffer after every step, (T, N, L) (`mask_id` = masked).

    Returns:
      tokens (N, L) int32 with no [MASK] left, or (tokens, history).
    """
    sampling.check_args(temperature, top_k, top_p)
    if init is None:
        if num_samples is None or length is None or num_samples < 1 or length < 1:
            raise ValueError(f"maskgit: give init or num_samples, length >= 1, got "
                             f"{num_samples!r}, {length!r}")
        init = jnp.full((num_samples, length), mask_id, jnp.int32)
    init = jnp.asarray(init, jnp.int32)
    if init.ndim != 2:
        raise ValueError(f"maskgit: init must be (num_samples, length), got {init.shape}")
    check_args(num_steps, choice_temperature, init.shape[1])
    counts = schedule(jnp.sum(init == mask_id, -1), num_steps, init.shape[1])  # (T, N)

    def step(tokens, t):
        k_draw, k_choice = jax.random.split(jax.random.fold_in(key, t))
        logits = logits_fn(tokens).astype(jnp.float32)  # (N, L, V)
        filtered = sampling.filter_logits(logits, temperature=temperature, top_k=top_k,
                                          top_p=top_p)
        if temperature == 0:
            drawn = jnp.argmax(filtered, -1).astype(jnp.int32)
            logp = jax.nn.log_softmax(logits, -1)
        else:
            drawn = jax.random.categorical(k_draw, filtered, -1).astype(jnp.int32)
            logp = jax.nn.log_softmax(filtered, -1)
        masked = tokens == mask_id  # (N, L)
        proposal = jnp.where(masked, drawn, tokens)
        logp_drawn = jnp.take_along_axis(logp, drawn[..., None], -1)[..., 0]  # (N, L)
        tau = choice_temperature * (1.0 - (t + 1.0) / num_steps)
        confidence = logp_drawn + tau * jax.random.gumbel(k_choice, logp_drawn.shape)
        confidence = jnp.where(masked, confidence, jnp.inf)  # fixed tokens stay fixed
        rank = jnp.argsort(jnp.argsort(confidence, -1, stable=True), -1, stable=True)
        remask = rank < counts[t][:, None]  # the n_t least confident, exactly
        tokens = jnp.where(remask, mask_id, proposal)
        return tokens, tokens

    tokens, steps = jax.lax.scan(step, init, jnp.arange(num_steps))
    return (tokens, steps) if history else tokens
