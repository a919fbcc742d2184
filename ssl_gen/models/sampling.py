r"""Autoregressive sampling from a causal model: temperature, top-k and top-p (nucleus).

Sampling is ON by default (temperature 1, no truncation: exact ancestral samples of the
model). Greedy decoding is `temperature=0` and must be asked for: taming-transformers'
`sample()` defaults to `sample=False`, i.e. argmax at every position, a known trap, since
argmax decoding of an image prior gives the same few (often blank) images instead of
samples of the distribution.

The filters, applied to one position's logits in this order (the order of HuggingFace's
`generate`): divide by `temperature`; `top_k`: keep the k largest logits; `top_p` (Holtzman
et al. 2020, "The Curious Case of Neural Text Degeneration", Sec. 3.1): keep the smallest
set of most probable tokens whose probability (under the tempered, top-k filtered
distribution) is >= p. Dropped logits become -inf.

Ties (documented rules, both tested):
- top-k keeps exactly k tokens (k > vocabulary: all of them); among equal logits at the
  boundary the lower token index is kept (`jax.lax.top_k`'s order);
- top-p ranks tokens by probability, equal ones by lower index first (a stable sort), and
  keeps the shortest prefix of that ranking whose cumulative probability reaches p; the
  most probable token is always kept.

`sample_tokens(logits_fn, key, ...)` fills a fixed-size (N, length) buffer left to right in
a `lax.fori_loop` (jit-friendly, one trace): at step t it calls `logits_fn(tokens)` on the
whole buffer and draws token t from position t's logits. `logits_fn` must be causal and
aligned (logits[:, t] depends only on tokens[:, :t], as `ssl_gen.models.gpt` is), so the
not-yet-drawn tokens (zeros) never matter. No KV cache: each step recomputes the whole
prefix, so a sample costs `length` full forward passes, O(length²) attention rows instead of
O(length). For the 16-code digit grids that is 16 passes over 16 tokens, a fraction of a
second; a cache would add a second decoding path (its own tests of agreement with the full
pass) for no measurable gain at this length. Images with 256+ codes would want one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def check_args(temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None) -> None:
    """One-line ValueError for a bad sampling argument (before anything is traced)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature >= 0:
        raise ValueError(f"sampling: temperature must be a number >= 0 (0: greedy argmax), got "
                         f"{temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"sampling: top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"sampling: top_p must be None or in (0, 1], got {top_p!r}")


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
    """Boolean (..., V): True on exactly min(k, V) largest logits (ties: lower index kept)."""
    k = min(k, logits.shape[-1])
    _, idx = jax.lax.top_k(logits, k)  # (..., k)
    keep = jnp.zeros(logits.shape, bool)
    return jnp.put_along_axis(keep, idx, True, axis=-1, inplace=False)


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
    """Boolean (..., V): True on the smallest most-probable set with probability >= p."""
    probs = jax.nn.softmax(logits, axis=-1)
    order = jnp.argsort(-probs, axis=-1, stable=True)  # (..., V) most probable first
    sorted_p = jnp.take_along_axis(probs, order, axis=-1)
    before = jnp.cumsum(sorted_p, axis=-1) - sorted_p  # mass strictly ahead of each token
    keep_sorted = before < p  # the first token always (before = 0 < p)
    keep = jnp.zeros(logits.shape, bool)
    return jnp.put_along_axis(keep, order, keep_sorted, axis=-1, inplace=False)


def filter_logits(logits: jax.Array, *, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> jax.Array:
    """Tempered logits with the tokens top-k / top-p drop set to -inf (module docstring).

    `temperature=0` returns the logits unscaled (the caller takes the argmax)."""
    check_args(temperature, top_k, top_p)
    logits = jnp.asarray(logits, jnp.float32)
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None:
        logits = jnp.where(top_k_mask(logits, top_k), logits, -jnp.inf)
    if top_p is not None and top_p < 1.0:
        logits = jnp.where(top_p_mask(logits, top_p), logits, -jnp.inf)
    return logits


def draw(key: jax.Array, logits: jax.Array, *, temperature: float = 1.0,
         top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """One token per row of logits (..., V): a sample of the filtered distribution, or the
    argmax when temperature is 0. int32 (...)."""
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
        return jnp.argmax(filtered, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)


def sample_tokens(logits_fn: Callable[[jax.Array], jax.Array], key: jax.Array, *,
                  num_samples: int, length: int, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None) -> jax.Array:
    """Ancestral samples (num_samples, length) int32 of a causal, aligned model.

    Args:
      logits_fn: tokens (N, length) int32 -> logits (N, length, V); logits[:, t] must
        depend on tokens[:, :t] only (the module docstring).
      key: the PRNG key; position t draws with `fold_in(key, t)`.
      num_samples, length: the buffer's shape.
      temperature, top_k, top_p: the filters (module docstring); defaults sample exactly.
    """
    check_args(temperature, top_k, top_p)
    if length < 1 or num_samples < 1:
        raise ValueError(f"sampling: num_samples and length must be >= 1, got {num_samples}, "
                         f"{length}")

    def body(t, tokens):
        logits = jax.lax.dynamic_index_in_dim(logits_fn(tokens), t, axis=1,
                                              keepdims=False)  # (N, V)
        nxt = draw(jax.random.fold_in(key, t), logits, temperature=temperature, top_k=top_k,
                   top_p=top_p)
        return jax.lax.dynamic_update_index_in_dim(tokens, nxt, t, axis=1)

    tokens = jnp.zeros((num_samples, length), jnp.int32)
    return jax.lax.fori_loop(0, length, body, tokens)
