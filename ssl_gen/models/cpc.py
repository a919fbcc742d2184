"""Contrastive Predictive Coding (van den Oord, Li & Vinyals 2018, "Representation Learning
with Contrastive Predictive Coding", Sec. 2 and Fig. 1), for 1-D sequences.

The three pieces of the paper's model:
1. the encoder g_enc, a stack of strided 1-D convolutions (the paper's audio encoder is five,
   strides 5, 4, 2, 2, 2): input x (B, T) or (B, T, C) -> latents z_t (B, T', Dz), one per
   frame of `stride` = prod(strides) input steps, T' = T / stride;
2. the autoregressive context network g_ar -> c_t (B, T', Dc) summarizing z_{<=t}: a GRU
   (the paper's; `flax.linen.GRUCell` scanned by `nn.RNN`) or, with `context="transformer"`,
   a small pre-LayerNorm causal transformer (learned position embeddings, a causal mask);
3. one linear map W_k (Dc -> Dz, no bias) per prediction step k = 1..K, so the log-bilinear
   score of Eq. 3 is f_k(z_{t+k}, c_t) = z_{t+k}^T W_k c_t (the InfoNCE loss over these
   scores is `ssl_gen.objectives.cpc`).

Causality. Every convolution is *causally* padded: a layer of kernel k and stride s pads
k - s zeros on the left, so its output t reads its inputs [s t - (k - s), s t + s - 1] and
T' = T / stride exactly. By induction frame t of the encoder reads no input after
`last_input(t) = stride (t + 1) - 1`, and c_t (GRU or masked attention over z_{<=t}) none
either: the context at frame t sees x up to the end of frame t and nothing of the future
that W_k c_t must predict (tests/models/test_cpc.py checks it by gradients). With kernels
wider than the strides the encoder's receptive field reaches back over several frames, as
the paper's does (465 samples at stride 160), so z_{t+k} and c_t share input for small k;
the "mnist1d" variant has none (its VARIANTS comment says why).

Features (the `FeatureExtractor` protocol, for the few-shot / kNN / linear-probe evals):
`pool="last"` (default) is c at the last frame, the paper's choice for its linear
classifiers ("the context vector c_t ... can be used", Sec. 2.2; its speaker / phone
probes read c_t); `pool="mean"` is c averaged over the frames.

Entry points: `__call__(x, *, train=False) -> (predictions (K, B, T', Dz), aux)` with
aux {"z": (B, T', Dz), "c": (B, T', Dc)}, predictions[k - 1] = W_k c (every frame; the
objective pairs frame t with z_{t+k}); `encode(x) -> z`, `context_vectors(z) -> c`,
`features(x) -> (B, Dc)`; `stride()`, `steps()` (K) and `last_input(t)` are plain methods.
Everything is float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

CONTEXTS = ("gru", "transformer")
POOLS = ("last", "mean")

# Variants. "mnist1d" is ours (no paper trains CPC on MNIST-1D): 40 steps -> 10 frames of
# 4, the first conv's kernel equal to its stride and 1x1 convs after it, so z_t reads its own
# 4 inputs only and shares none with the context that predicts it (with overlapping
# receptive fields, CPC on MNIST-1D matched the sequences by their shared inputs and noise,
# and its features probed worse than at initialization). "tiny" is for tests and `runlocal`.
VARIANTS = {
    "mnist1d": dict(widths=(64, 64, 64), kernels=(4, 1, 1), strides=(4, 1, 1),
                    context_dim=128, num_steps=3),
    "tiny": dict(widths=(8, 8), kernels=(4, 3), strides=(2, 1), context_dim=8,
                 num_steps=2),
}


class CausalConv(nn.Module):
    """A 1-D convolution padded k - s on the left: output t reads inputs [s t - (k - s),
    s t + s - 1] (zeros before 0), T_out = T_in / s."""

    features: int
    kernel: int
    stride: int

    @nn.compact
    def __call__(self, x):  # (B, T, C)
        x = jnp.pad(x, ((0, 0), (self.kernel - self.stride, 0), (0, 0)))
        return nn.Conv(self.features, (self.kernel,), strides=(self.stride,),
                       padding="VALID")(x)  # (B, T / s, features)


class CausalTransformer(nn.Module):
    """Pre-LayerNorm transformer blocks with a causal mask over the frames (or the given
    `mask`, (T', T') booleans, True where a frame may attend: `models.cpc_grid`'s rows)."""

    width: int
    depth: int = 2
    num_heads: int = 4
    max_len: int = 512

    @nn.compact
    def __call__(self, z, mask=None):  # (B, T', Dz)
        t = z.shape[1]
        if t > self.max_len:
            raise ValueError(f"cpc: {t} frames exceed the transformer's max_len={self.max_len}")
        x = nn.Dense(self.width, name="embed")(z)
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (self.max_len,
                                                                         self.width))
        x = x + pos[:t]
        if mask is None:
            mask = nn.make_causal_mask(jnp.ones(z.shape[:2]))  # (B, 1, T', T')
        else:
            mask = jnp.broadcast_to(jnp.asarray(mask, bool), (z.shape[0], 1, t, t))
        for i in range(self.depth):
            h = nn.LayerNorm(name=f"ln_attn_{i}")(x)
            x = x + nn.MultiHeadDotProductAttention(
                num_heads=self.num_heads, name=f"attn_{i}")(h, h, mask=mask)
            h = nn.LayerNorm(name=f"ln_mlp_{i}")(x)
            h = nn.Dense(4 * self.width, name=f"mlp_in_{i}")(h)
            x = x + nn.Dense(self.width, name=f"mlp_out_{i}")(nn.gelu(h))
        return nn.LayerNorm(name="ln_final")(x)  # (B, T', width)


class Model(nn.Module):
    """The CPC model. Fields left None come from `variant`; explicit ones win."""

    variant: str | None = "mnist1d"  # a key of VARIANTS
    widths: Sequence[int] | None = None  # conv output widths; the last is Dz
    kernels: Sequence[int] | None = None
    strides: Sequence[int] | None = None
    context_dim: int | None = None  # Dc
    num_steps: int | None = None  # K, the prediction steps
    context: str = "gru"  # "gru" (the paper's) | "transformer"
    transformer_depth: int = 2
    transformer_heads: int = 4
    pool: str = "last"  # features(): "last" (c at the last frame) | "mean" (over frames)

    def config(self) -> dict:
        """The resolved architecture: the variant's fields with explicit ones applied."""
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"cpc: unknown variant {self.variant!r}; known: "
                             f"{', '.join(VARIANTS)}")
        cfg = dict(VARIANTS[self.variant or "mnist1d"])
        for name in ("widths", "kernels", "strides", "context_dim", "num_steps"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        cfg = {k: (tuple(int(a) for a in v) if isinstance(v, Sequence) else int(v))
               for k, v in cfg.items()}
        if not len(cfg["widths"]) == len(cfg["kernels"]) == len(cfg["strides"]) >= 1:
            raise ValueError(f"cpc: widths, kernels and strides must have one entry per "
                             f"conv layer, got {cfg['widths']}, {cfg['kernels']}, "
                             f"{cfg['strides']}")
        if any(k < s or s < 1 for k, s in zip(cfg["kernels"], cfg["strides"], strict=True)):
            raise ValueError(f"cpc: each kernel must be >= its stride >= 1, got kernels "
                             f"{cfg['kernels']} and strides {cfg['strides']}")
        if cfg["num_steps"] < 1:
            raise ValueError(f"cpc: num_steps must be >= 1, got {cfg['num_steps']}")
        if self.context not in CONTEXTS:
            raise ValueError(f"cpc: context={self.context!r} is not one of {CONTEXTS}")
        if self.pool not in POOLS:
            raise ValueError(f"cpc: pool={self.pool!r} is not one of {POOLS}")
        return cfg

    def stride(self) -> int:
        """Input steps per frame: the product of the conv strides."""
        return int(np.prod(self.config()["strides"]))

    def steps(self) -> int:
        """K, the number of prediction steps."""
        return self.config()["num_steps"]

    def last_input(self, t: int) -> int:
        """The last input index that z_t and c_t read (module docstring: causality)."""
        return self.stride() * (t + 1) - 1

    def _as_sequence(self, x):
        x = jnp.asarray(x, jnp.float32)
        if x.ndim == 2:
            x = x[..., None]  # (B, T) -> (B, T, 1)
        if x.ndim != 3:
            raise ValueError(f"cpc: input must be (B, T) or (B, T, C), got shape {x.shape}")
        s = self.stride()
        if x.shape[1] % s or x.shape[1] < s:
            raise ValueError(f"cpc: sequence length {x.shape[1]} is not a positive multiple "
                             f"of the encoder's total stride {s}")
        return x

    def setup(self):
        cfg = self.config()
        layers = zip(cfg["widths"], cfg["kernels"], cfg["strides"], strict=True)
        self.convs = [CausalConv(f, k, s, name=f"conv_{i}")
                      for i, (f, k, s) in enumerate(layers)]
        if self.context == "gru":
            self.ar = nn.RNN(nn.GRUCell(features=cfg["context_dim"]), name="gru")
        else:
            self.ar = CausalTransformer(cfg["context_dim"], self.transformer_depth,
                                        self.transformer_heads, name="transformer")
        self.predictors = [nn.Dense(cfg["widths"][-1], use_bias=False, name=f"W_{k + 1}")
                           for k in range(cfg["num_steps"])]

    def encode(self, x):
        """z (B, T', Dz): the strided causal convolutions, ReLU between them (none after the
        last, so z is not forced non-negative)."""
        h = self._as_sequence(x)
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i < len(self.convs) - 1:
                h = nn.relu(h)
        return h

    def context_vectors(self, z):
        """c (B, T', Dc): the GRU (or causal transformer) over z_{<=t}."""
        return self.ar(z)

    def __call__(self, x, *, train: bool = False):
        z = self.encode(x)  # (B, T', Dz)
        c = self.context_vectors(z)  # (B, T', Dc)
        preds = jnp.stack([w(c) for w in self.predictors])  # (K, B, T', Dz): W_k c_t
        return preds, {"z": z, "c": c}

    def features(self, x):
        """The frozen representation (B, Dc): c at the last frame, or its mean over frames."""
        c = self.context_vectors(self.encode(x))
        return c[:, -1] if self.pool == "last" else c.mean(axis=1)
