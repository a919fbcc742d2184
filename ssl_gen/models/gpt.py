r"""A causal (decoder-only) transformer over integer tokens: GPT (Radford et al. 2018, 2019).

tokens (B, T) int in [0, vocab_size) -> logits (B, T, vocab_size), where logits[:, t] is
the distribution of token t given tokens[:, :t] (never token t itself or later ones):

  h_0 = start,  h_t = embed(tokens[t - 1]) for t >= 1      (a learned start embedding, so
                                                            the first token has a distribution)
  h = h + pos_embedding[:T]                                (learned positions, GPT-2)
  h = h + attn(LN(h), causal mask);  h = h + mlp(LN(h))    (pre-LN blocks, GPT-2 Sec. 2.3)
  logits = LN(h) @ embed^T   (weight tying, `tie_embeddings=True`), else a Dense head.

The input is shifted inside the model, so the logits are aligned with the tokens that are
their targets: the next-token loss is `cross_entropy(logits, tokens)` with no slicing, and a
sampler fills a fixed-size buffer left to right, reading logits[:, t] once tokens[:, :t] are
drawn (`ssl_gen.models.sampling`). The causal mask is `flax.linen.make_causal_mask`
(position t attends to positions <= t of the shifted input, i.e. tokens < t).

Initialization: every kernel and embedding ~ N(0, 0.02²), biases 0 (GPT-2's; its 1/sqrt(2L)
scaling of the residual projections is not applied: at the depths used here it does not
matter). The MLP is 4x wide with GELU (GPT-2).

`__call__(tokens, *, train=False) -> (logits, aux)`, aux = {"hidden": the final normalized
hidden states (B, T, width)}; dropout (on the embeddings, attention weights and residual
branches) is active when train=True and needs the "dropout" rng.

`bidirectional=True`: the same blocks as a bidirectional (BERT-style) masked-token model,
MaskGIT's transformer (Chang et al. 2022, Sec. 3.1; `ssl_gen.models.maskgit`):

  h_t = embed(tokens[t]) + pos_embedding[t]     (no shift, no start embedding)
  attention with no mask (every position sees every position, the future included)
  logits = (LN(h) @ embed^T)[..., :vocab_size]

tokens are in [0, vocab_size]: the extra id `vocab_size` is the [MASK] token (one more
embedding row, `mask_id`); logits[:, t] is the distribution of token t given every unmasked
token, over the vocab_size real tokens only ([MASK] is never predicted).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ssl_gen.models import variants

VARIANTS = {
    # GPT-2 small (Radford et al. 2019, Table 2: 12 layers, d_model 768, 1024 context; 12
    # heads as released).
    "gpt2_small": dict(width=768, depth=12, num_heads=12, max_len=1024),
    # The prior over the digits VQ-VAE's 4x4 code grid (16 tokens, K = 256).
    "digits": dict(width=128, depth=4, num_heads=4, max_len=16),
    # The prior over the photo VQGAN's 8x8 code grid (64 tokens, K = 512; experiments/vq_prior.py
    # :photos): the digits' width and depth, 4x the context.
    "photos": dict(width=128, depth=4, num_heads=4, max_len=64),
    # Unit tests and `runlocal`.
    "tiny": dict(width=32, depth=2, num_heads=2, max_len=16),
}

_init = nn.initializers.normal(0.02)


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    width: int
    num_heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0

    @nn.compact
    def __call__(self, h, mask, *, train: bool):  # (B, T, D) -> (B, T, D)
        drop = lambda x: nn.Dropout(self.dropout, deterministic=not train)(x)
        a = nn.LayerNorm()(h)
        a = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, qkv_features=self.width, dropout_rate=self.dropout,
            deterministic=not train, kernel_init=_init)(a, a, mask=mask)
        h = h + drop(a)
        m = nn.LayerNorm()(h)
        m = nn.gelu(nn.Dense(self.mlp_ratio * self.width, kernel_init=_init)(m))
        m = nn.Dense(self.width, kernel_init=_init)(m)
        return h + drop(m)


class Model(nn.Module):
    """GPT (module docstring). Fields set explicitly win over the `variant`'s."""

    vocab_size: int = 256
    max_len: int = 16
    width: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    tie_embeddings: bool = True
    bidirectional: bool = False  # MaskGIT's masked-token model (module docstring)
    variant: str | None = None

    @property
    def mask_id(self) -> int:
        """The [MASK] token's id of a bidirectional model (= vocab_size)."""
        return self.vocab_size

    def _cfg(self, name):
        return variants.field(self, name, VARIANTS, "gpt")

    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        if tokens.ndim != 2:
            raise ValueError(f"gpt: tokens must be (batch, length) integers, got shape "
                             f"{tokens.shape}")
        b, t = tokens.shape
        width, max_len = self._cfg("width"), self._cfg("max_len")
        heads = self._cfg("num_heads")
        if t > max_len:
            raise ValueError(f"gpt: {t} tokens exceed max_len={max_len}")
        if width % heads:
            raise ValueError(f"gpt: width {width} is not divisible by num_heads {heads}")
        # A bidirectional model has one more row: the [MASK] token, id vocab_size.
        embed = nn.Embed(self.vocab_size + self.bidirectional, width, embedding_init=_init,
                         name="embed")
        # Parameters in the causal model's creation order (the rng stream depends on it).
        start = None if self.bidirectional else self.param("start", _init, (width,))
        pos = self.param("pos_embedding", _init, (max_len, width))
        if self.bidirectional:
            h = embed(tokens.astype(jnp.int32))  # (B, T, D): no shift
            mask = None  # every query sees every key
        else:
            # Shift right: position t sees the start embedding and tokens 0 .. t-1.
            h = embed(tokens[:, :-1].astype(jnp.int32))  # (B, T-1, D)
            h = jnp.concatenate([jnp.broadcast_to(start, (b, 1, width)).astype(h.dtype), h], 1)
            mask = nn.make_causal_mask(jnp.ones((b, t)))  # (B, 1, T, T): query t, keys <= t
        h = h + pos[None, :t]  # (B, T, D)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        for i in range(self._cfg("depth")):
            h = Block(width, heads, self.mlp_ratio, self.dropout, name=f"block_{i}")(
                h, mask, train=train)
        h = nn.LayerNorm(name="final_norm")(h)
        if self.tie_embeddings:
            logits = embed.attend(h)[..., :self.vocab_size]  # (B, T, V): [MASK] dropped
        else:
            logits = nn.Dense(self.vocab_size, kernel_init=_init, name="head")(h)
        return logits, {"hidden": h}
