"""The Vision Transformer (Dosovitskiy et al. 2021), with the switches large runs use.

Image (B, H, W, C) -> conv patch embedding (B, h*w, D) -> + position embeddings -> [class
token] -> pre-LN transformer blocks -> final LayerNorm -> pooling -> [head].

Parameter layout follows big_vision's `models/vit.py` names ("embedding", "pos_embedding",
"cls", "Transformer/encoderblock_{i}/...", "Transformer/encoder_norm", "MAPHead_0", "head"),
except that with a class token the position table has one row more, for the class token, as
in the original ViT, timm and MAE (learned: `pos_embedding` (1, 1 + h*w, D); that is what
makes ViT-B/16 with a 1000-class head the familiar 86,567,656 parameters). Each block is
x += Attn(LN(x)); x += MLP(LN(x)), with dropout after each branch and stochastic depth
(per-example drop path, rate rising linearly from 0 to `drop_path` over the blocks, as timm).
Attention has no dropout (neither reference uses it) and runs through
`jax.nn.dot_product_attention` (`attention_impl`: None lets JAX choose, "xla", or "cudnn" for
cuDNN's fused flash attention on GPUs, which wants bf16 or fp16: `dtype="bfloat16"`).

Position embeddings (`posemb`):
- "learn": a parameter, for the grid `image_size // patch_size`. An input of another size
  gets the table interpolated on the fly (`resize_posemb`), and `resize_loaded` (the
  `config.init_from` hook) interpolates a loaded table to the run's grid.
- "sincos2d": fixed, not a parameter. Rows are the patches in row-major order, each row
  [sin(x w), cos(x w), sin(y w), cos(y w)] with x the column, y the row, and w_k =
  10000^(-k / K), k = 0 .. K-1, K = D / 4: MAE's `get_2d_sincos_pos_embed` (util/pos_embed.py,
  the MoCo v3 table), whose class-token row is zeros. `sincos_layout="big_vision"` gives
  big_vision's `posemb_sincos_2d` instead: the same order of blocks, but w_k = 10000^(-k /
  (K - 1)), so its last frequency is exactly 1/10000 (MAE's stops one step short).

Pooling (`pool`): "cls" (the class token's output), "gap" (mean of the patch tokens; with
`class_token=True` too, the class token is left out of the mean as in MAE's fine-tuning), or
"map" (multi-head attention pooling, big_vision's MAPHead: a learned probe attends to the
tokens, then a residual MLP).

Initializers (`weight_init`):
- "vit" (Google's ViT / big_vision): xavier-uniform linear kernels, MLP biases N(0, 1e-6),
  the patch embedding lecun-normal (Flax's conv default), the class token zero, learned
  position embeddings N(0, 1/D), the MAP probe xavier-uniform, the head zero (kernel and bias).
- "mae" (MAE's `initialize_weights` / timm): xavier-uniform linears with zero biases; the
  patch embedding xavier-uniform as a (p*p*C, D) linear; the class token, the MAE mask token
  and learned position embeddings N(0, 0.02); the head N(0, 2e-5) (MAE's main_finetune.py).
  Note on attention: PyTorch's reference has one fused (D, 3D) qkv linear, so its xavier
  bound is sqrt(6 / (D + 3D)); Flax's split query/key/value kernels (D, D) would get
  sqrt(6 / 2D), 1.41x wider. "mae" uses the fused bound on the split kernels, as the
  reference draws them; "vit" uses the split bound, as Google's ViT does.

Switches for scale: `dtype="bfloat16"` computes in bf16 with float32 parameters (LayerNorm
statistics in float32; outputs returned as float32); `remat` rematerializes each block with a
`jax.checkpoint_policies` policy ("nothing_saveable", "dots_saveable", ...; "full" = save
nothing, policy None); `scan=True` runs the blocks as one `nn.scan` (compile time flat in
depth; parameters stacked under "Transformer/encoderblock", `stack_blocks` / `unstack_blocks`
convert); `patch_dropout` keeps a random int(N (1 - p)) of the patch tokens in training
(FLIP, Li et al. 2023).

Entry points: `__call__(x, *, train=False) -> (logits, aux)` (features when num_classes=0;
aux: "tokens" the final-normed sequence, "patch_tokens" without the class token (with
patch dropout in training: the kept ones, in noise order), "pre_logits" the pooled
features); `features(x) -> (B, D)` (the `FeatureExtractor` protocol); `embed(x) ->
(B, h*w, D)` patch tokens with their position embeddings;
`encode_tokens(tokens, *, train=False)` the class token, blocks and final norm on any
subset of embedded tokens (MAE's encoder); `tokens(x, *, merge=1)` patch tokens for
downstream use, `merge=2` pixel-shuffling 2x2 neighbours into one (`pixel_shuffle_merge`).

Weights: `save(path, variables)` / `load(path)`, one safetensors file (`models/weights.py`);
`load` also reads published timm / Hugging Face / MAE-release checkpoints
(`models/pretrained.py`), so `config.init_from` can start a run from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.models import weights

# Variants: width, depth, MLP width, heads. Ti..H as big_vision's `decode_variant`
# (big_vision/models/vit.py), which cites Table 2 of Zhai et al. 2022, "Scaling Vision
# Transformers" (arXiv:2106.04560); B/L/H are Dosovitskiy et al. 2021's Table 1, Ti and S
# Touvron et al. 2021 (DeiT). "tiny" is ours, for tests and `runlocal`.
VARIANTS = {
    "tiny": dict(width=32, depth=2, mlp_dim=64, num_heads=2),
    "Ti": dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    "S": dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    "B": dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    "L": dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
    "H": dict(width=1280, depth=32, mlp_dim=5120, num_heads=16),
}
DEFAULT = dict(VARIANTS["B"], patch_size=(16, 16))  # with variant=None and nothing explicit
POOLS = ("cls", "gap", "map")
POSEMBS = ("learn", "sincos2d")
SINCOS_LAYOUTS = ("mae", "big_vision")
INITS = ("vit", "mae")
ATTENTION_IMPLS = (None, "xla", "cudnn")


def decode_variant(variant: str | None) -> dict[str, Any]:
    """"B/16" -> {width, depth, mlp_dim, num_heads, patch_size=(16, 16)}; "B" has no patch."""
    if variant is None:
        return {}
    name, _, patch = variant.partition("/")
    if name not in VARIANTS or (patch and not patch.isdigit()):
        raise ValueError(f"vit: unknown variant {variant!r}; known: {', '.join(VARIANTS)} "
                         "with an optional patch size, e.g. 'B/16'")
    out = dict(VARIANTS[name])
    if patch:
        out["patch_size"] = (int(patch), int(patch))
    return out


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else tuple(int(a) for a in v)


# ----------------------------------------------------------------------- position tables


def posemb_sincos_2d(h: int, w: int, width: int, *, layout: str = "mae",
                     temperature: float = 10_000.0) -> np.ndarray:
    """The fixed 2-D sin-cos table, (h*w, width) float32; see the module docstring.

    Computed in float64 and rounded once (MAE computes in float64 too)."""
    if width % 4:
        raise ValueError(f"vit: sin-cos position embeddings need a width divisible by 4, "
                         f"got {width}")
    if layout not in SINCOS_LAYOUTS:
        raise ValueError(f"vit: sincos_layout must be one of {SINCOS_LAYOUTS}, got {layout!r}")
    k = width // 4
    denom = k if layout == "mae" else max(k - 1, 1)
    omega = temperature ** -(np.arange(k, dtype=np.float64) / denom)  # (K,)
    y, x = np.mgrid[:h, :w].astype(np.float64)
    ax = x.reshape(-1, 1) * omega  # (h*w, K): column
    ay = y.reshape(-1, 1) * omega  # (h*w, K): row
    return np.concatenate([np.sin(ax), np.cos(ax), np.sin(ay), np.cos(ay)], 1).astype(np.float32)


def resize_posemb(posemb, new_grid, *, old_grid=None, num_prefix: int = 0,
                  method: str = "cubic"):
    """A position table (1, P + h*w, D) resampled to (1, P + h'*w', D) on the grid new_grid.

    The first `num_prefix` rows (a class token's) are kept; the grid rows are resized as an
    image with `jax.image.resize` (half-pixel centres, as PyTorch's align_corners=False;
    "cubic" is Keys' a=-0.5 kernel, so not bit-equal to torch's bicubic, a=-0.75), without
    antialiasing. `old_grid` None: a square grid. The same grid gives the table back.
    """
    posemb = jnp.asarray(posemb)
    _, n, d = posemb.shape
    n_grid = n - num_prefix
    if old_grid is None:
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            raise ValueError(f"vit.resize_posemb: {n_grid} grid rows are not a square; pass "
                             "old_grid=(h, w)")
        old_grid = (side, side)
    (h, w), (nh, nw) = _pair(old_grid), _pair(new_grid)
    if h * w != n_grid:
        raise ValueError(f"vit.resize_posemb: old_grid {(h, w)} does not hold {n_grid} rows")
    grid = posemb[0, num_prefix:].reshape(h, w, d).astype(jnp.float32)
    grid = jax.image.resize(grid, (nh, nw, d), method=method, antialias=False)
    out = jnp.concatenate([posemb[0, :num_prefix].astype(jnp.float32),
                           grid.reshape(nh * nw, d)])[None]
    return out.astype(posemb.dtype)


def resize_loaded(path: str, array: np.ndarray, target_shape: tuple[int, ...]
                  ) -> np.ndarray | None:
    """`config.init_from`'s hook: a loaded learned position table (".../pos_embedding",
    (1, P + h*h, D)) interpolated to the run's (1, P + h'*h', D); None for anything else.
    P (0, or 1 for a class token) is the count that makes both grids square."""
    if not path.endswith("pos_embedding") or array.ndim != 3 or len(target_shape) != 3:
        return None
    if array.shape[0] != target_shape[0] or array.shape[2] != target_shape[2]:
        return None
    for prefix in (0, 1):
        a, b = array.shape[1] - prefix, target_shape[1] - prefix
        if a > 0 and b > 0 and math.isqrt(a) ** 2 == a and math.isqrt(b) ** 2 == b:
            side = math.isqrt(b)
            out = resize_posemb(array, (side, side), num_prefix=prefix)
            return np.asarray(out, dtype=array.dtype)
    return None


def pixel_shuffle_merge(tokens, grid, factor: int = 2):
    """(B, h*w, D) tokens on a row-major grid (h, w) -> (B, (h/f)*(w/f), f*f*D): each f x f
    block of neighbours becomes one token, channels ordered (row offset, col offset, D)."""
    b, n, d = tokens.shape
    h, w = grid
    if n != h * w or h % factor or w % factor:
        raise ValueError(f"vit.pixel_shuffle_merge: {n} tokens on grid {(h, w)} cannot merge "
                         f"{factor}x{factor} blocks; the grid must divide by {factor}")
    t = tokens.reshape(b, h // factor, factor, w // factor, factor, d)
    t = t.transpose(0, 1, 3, 2, 4, 5)  # (B, h/f, w/f, f, f, D)
    return t.reshape(b, (h // factor) * (w // factor), factor * factor * d)


# --------------------------------------------------------------------------- initializers


def _fused_qkv_xavier(key, shape, dtype=jnp.float32):
    """xavier-uniform with PyTorch's fused-qkv fans: a (D, D) part of a (D, 3D) linear."""
    fan_in, fan_out = shape[0], 3 * int(np.prod(shape[1:]))
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def initializers(init: str) -> dict[str, Any]:
    """The named initializers of `init` ("vit" or "mae"); see the module docstring."""
    xavier, zeros = nn.initializers.xavier_uniform(), nn.initializers.zeros
    if init == "vit":
        return dict(dense=xavier, mlp_bias=nn.initializers.normal(1e-6), qkv=xavier,
                    embed=nn.initializers.lecun_normal(), token=zeros,
                    posemb=None, probe=xavier, head=zeros)
    if init == "mae":
        normal02 = nn.initializers.normal(0.02)
        return dict(dense=xavier, mlp_bias=zeros, qkv=_fused_qkv_xavier,
                    embed=nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=-1),
                    token=normal02, posemb=normal02, probe=xavier,
                    head=nn.initializers.normal(2e-5))
    raise ValueError(f"vit: init must be one of {INITS}, got {init!r}")


# --------------------------------------------------------------------------------- blocks


class Attention(nn.Module):
    """Multi-head attention via jax.nn.dot_product_attention; Flax's MHDPA parameter names."""

    num_heads: int
    dtype: Any = None
    implementation: str | None = None
    weight_init: str = "vit"

    @nn.compact
    def __call__(self, q_in, kv_in):
        d = q_in.shape[-1]
        if d % self.num_heads:
            raise ValueError(f"vit: width {d} is not divisible by num_heads={self.num_heads}")
        inits = initializers(self.weight_init)
        proj = lambda name: nn.DenseGeneral((self.num_heads, d // self.num_heads),
                                            dtype=self.dtype, kernel_init=inits["qkv"],
                                            name=name)
        q, k, v = proj("query")(q_in), proj("key")(kv_in), proj("value")(kv_in)  # (B, T, H, hd)
        y = jax.nn.dot_product_attention(q, k, v, implementation=self.implementation)
        return nn.DenseGeneral(d, axis=(-2, -1), dtype=self.dtype, kernel_init=inits["dense"],
                               name="out")(y)  # (B, T, D)


class MlpBlock(nn.Module):
    mlp_dim: int
    dropout: float = 0.0
    dtype: Any = None
    weight_init: str = "vit"
    gelu_approximate: bool = False

    @nn.compact
    def __call__(self, x, deterministic: bool):
        inits = initializers(self.weight_init)
        dense = lambda n: nn.Dense(n, dtype=self.dtype, kernel_init=inits["dense"],
                                   bias_init=inits["mlp_bias"])
        y = nn.gelu(dense(self.mlp_dim)(x), approximate=self.gelu_approximate)
        y = nn.Dropout(self.dropout)(y, deterministic)
        return dense(x.shape[-1])(y)


def _drop_path(module: nn.Module, y, rate, deterministic: bool):
    """Stochastic depth: zero the branch `y` of a random `rate` of the examples, scale the
    rest by 1 / (1 - rate). `rate` may be traced (one per block under scan)."""
    if deterministic:
        return y
    keep = 1.0 - rate
    shape = (y.shape[0],) + (1,) * (y.ndim - 1)
    kept = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
    return jnp.where(kept, y / keep, 0).astype(y.dtype)


class Encoder1DBlock(nn.Module):
    """One pre-LN block. `(x, drop_rate, deterministic) -> (x, None)`, scan's carry form."""

    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    stochastic_depth: bool = False
    dtype: Any = None
    attention_impl: str | None = None
    weight_init: str = "vit"
    gelu_approximate: bool = False
    layer_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, drop_rate, deterministic: bool):
        drop = lambda y: (_drop_path(self, y, drop_rate, deterministic)
                          if self.stochastic_depth else y)
        y = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype)(x)
        y = Attention(self.num_heads, self.dtype, self.attention_impl, self.weight_init,
                      name="MultiHeadDotProductAttention_0")(y, y)
        x = x + drop(nn.Dropout(self.dropout)(y, deterministic))
        y = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype)(x)
        y = MlpBlock(self.mlp_dim, self.dropout, self.dtype, self.weight_init,
                     self.gelu_approximate)(y, deterministic)
        x = x + drop(nn.Dropout(self.dropout)(y, deterministic))
        return x, None


class Encoder(nn.Module):
    """`depth` blocks and the final LayerNorm: (B, T, D) -> (B, T, D). MAE's decoder too."""

    depth: int
    num_heads: int
    mlp_dim: int
    dropout: float = 0.0
    drop_path: float = 0.0  # the last block's rate; linear from 0
    scan: bool = False
    remat: str | None = None  # a jax.checkpoint_policies name, "full", or None
    dtype: Any = None
    attention_impl: str | None = None
    weight_init: str = "vit"
    gelu_approximate: bool = False
    layer_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        rates = np.linspace(0.0, self.drop_path, self.depth, dtype=np.float32)
        block = Encoder1DBlock
        if self.remat is not None:
            policy = None if self.remat == "full" else getattr(jax.checkpoint_policies,
                                                               self.remat)
            # static_argnums counts self as 0: `deterministic` is argument 3.
            block = nn.remat(block, prevent_cse=not self.scan, static_argnums=(3,),
                             policy=policy)
        kw = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                  stochastic_depth=self.drop_path > 0, dtype=self.dtype,
                  attention_impl=self.attention_impl, weight_init=self.weight_init,
                  gelu_approximate=self.gelu_approximate, layer_norm_eps=self.layer_norm_eps)
        if self.scan:
            scanned = nn.scan(block, variable_axes={"params": 0},
                              split_rngs={"params": True, "dropout": True},
                              in_axes=(0, nn.broadcast), length=self.depth)
            x, _ = scanned(name="encoderblock", **kw)(x, jnp.asarray(rates), not train)
        else:
            for i in range(self.depth):
                x, _ = block(name=f"encoderblock_{i}", **kw)(x, float(rates[i]), not train)
        return nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype,
                            name="encoder_norm")(x)


class MAPHead(nn.Module):
    """Multi-head attention pooling (big_vision): (B, T, D) -> (B, D)."""

    num_heads: int
    mlp_dim: int
    dtype: Any = None
    attention_impl: str | None = None
    weight_init: str = "vit"
    gelu_approximate: bool = False
    layer_norm_eps: float = 1e-6

    @nn.compact
    def __call__(self, x):
        b, _, d = x.shape
        probe = self.param("probe", initializers(self.weight_init)["probe"], (1, 1, d))
        probe = jnp.tile(probe.astype(x.dtype), (b, 1, 1))  # (B, 1, D)
        x = Attention(self.num_heads, self.dtype, self.attention_impl, self.weight_init,
                      name="MultiHeadDotProductAttention_0")(probe, x)
        y = nn.LayerNorm(epsilon=self.layer_norm_eps, dtype=self.dtype)(x)
        x = x + MlpBlock(self.mlp_dim, 0.0, self.dtype, self.weight_init,
                         self.gelu_approximate)(y, True)
        return x[:, 0]


# ---------------------------------------------------------------------------------- model


class Model(nn.Module):
    """The ViT. See the module docstring; fields left None come from `variant`, then from
    ViT-B/16 (`DEFAULT`); an explicit field wins over the variant's value."""

    variant: str | None = None  # "B/16", "S/8", "tiny/2", ... (VARIANTS)
    num_classes: int = 0  # 0: no head, the pooled features are the output
    image_size: int | Sequence[int] = 224  # the grid of the learned position table
    patch_size: int | Sequence[int] | None = None
    width: int | None = None
    depth: int | None = None
    mlp_dim: int | None = None
    num_heads: int | None = None
    pool: str = "cls"  # "cls" | "gap" | "map"
    class_token: bool | None = None  # None: pool == "cls"
    posemb: str = "learn"  # "learn" | "sincos2d"
    sincos_layout: str = "mae"  # "mae" | "big_vision"
    dropout: float = 0.0  # after the position embeddings and each residual branch
    drop_path: float = 0.0  # stochastic depth of the last block (linear from 0)
    patch_dropout: float = 0.0  # FLIP token dropping, training only
    weight_init: str = "vit"  # "vit" | "mae" (`Model.init` is Flax's method)
    gelu_approximate: bool = False  # tanh GELU (big_vision) rather than erf (PyTorch/timm)
    layer_norm_eps: float = 1e-6  # timm, MAE, big_vision; Hugging Face's configs say 1e-12
    dtype: str | None = None  # compute dtype ("bfloat16"); parameters stay float32
    remat: str | None = None  # jax.checkpoint_policies name, or "full"
    scan: bool = False
    attention_impl: str | None = None  # None | "xla" | "cudnn"

    # -- configuration

    def config(self) -> dict[str, Any]:
        """The resolved architecture: {width, depth, mlp_dim, num_heads, patch_size}."""
        cfg = {**DEFAULT, **decode_variant(self.variant)}
        for k in ("width", "depth", "mlp_dim", "num_heads", "patch_size"):
            if getattr(self, k) is not None:
                cfg[k] = getattr(self, k)
        cfg["patch_size"] = _pair(cfg["patch_size"])
        return cfg

    @property
    def has_class_token(self) -> bool:
        return self.pool == "cls" if self.class_token is None else bool(self.class_token)

    @property
    def grid(self) -> tuple[int, int]:
        """The patch grid of an `image_size` input."""
        (h, w), (ph, pw) = _pair(self.image_size), self.config()["patch_size"]
        return h // ph, w // pw

    def _check(self, cfg):
        checks = [(self.pool in POOLS, f"pool must be one of {POOLS}, got {self.pool!r}"),
                  (self.posemb in POSEMBS, f"posemb must be one of {POSEMBS}, got "
                                           f"{self.posemb!r}"),
                  (self.sincos_layout in SINCOS_LAYOUTS, f"sincos_layout must be one of "
                                                         f"{SINCOS_LAYOUTS}"),
                  (self.weight_init in INITS, f"weight_init must be one of {INITS}, got "
                                             f"{self.weight_init!r}"),
                  (self.attention_impl in ATTENTION_IMPLS, f"attention_impl must be one of "
                                                           f"{ATTENTION_IMPLS}"),
                  (self.pool != "cls" or self.has_class_token,
                   "pool='cls' needs class_token=True (or None)"),
                  (cfg["width"] % cfg["num_heads"] == 0,
                   f"width {cfg['width']} must be divisible by num_heads {cfg['num_heads']}"),
                  (0 <= self.patch_dropout < 1, "patch_dropout must be in [0, 1)"),
                  (self.remat is None or self.remat == "full"
                   or hasattr(jax.checkpoint_policies, self.remat),
                   f"remat={self.remat!r} must be None, 'full' or a jax.checkpoint_policies "
                   "name such as 'nothing_saveable' or 'dots_saveable'"),
                  (min(self.grid) >= 1, f"image_size {self.image_size} is smaller than the "
                                        f"patch {cfg['patch_size']}")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"vit: {msg}")

    def setup(self):
        cfg = self.config()
        self._check(cfg)
        d, p = cfg["width"], cfg["patch_size"]
        inits = initializers(self.weight_init)
        self._prefix = 1 if self.has_class_token else 0
        self.embedding = nn.Conv(d, p, strides=p, padding="VALID", dtype=self.dtype,
                                 kernel_init=inits["embed"])
        if self.has_class_token:
            self.cls = self.param("cls", inits["token"], (1, 1, d))
        if self.posemb == "learn":
            gh, gw = self.grid
            init = inits["posemb"] or nn.initializers.normal(1 / math.sqrt(d))
            self.pos_embedding = self.param("pos_embedding", init, (1, self._prefix + gh * gw, d))
        self.pos_dropout = nn.Dropout(self.dropout)
        self.Transformer = Encoder(
            depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_dim=cfg["mlp_dim"],
            dropout=self.dropout, drop_path=self.drop_path, scan=self.scan, remat=self.remat,
            dtype=self.dtype, attention_impl=self.attention_impl, weight_init=self.weight_init,
            gelu_approximate=self.gelu_approximate, layer_norm_eps=self.layer_norm_eps)
        if self.pool == "map":
            self.MAPHead_0 = MAPHead(cfg["num_heads"], cfg["mlp_dim"], self.dtype,
                                     self.attention_impl, self.weight_init, self.gelu_approximate,
                                     self.layer_norm_eps)
        if self.num_classes:
            self.head = nn.Dense(self.num_classes, kernel_init=inits["head"])

    # -- pieces

    def _table(self, h: int, w: int):
        """(prefix rows (1, P, D), grid rows (1, h*w, D)) for an (h, w) patch grid."""
        d = self.config()["width"]
        if self.posemb == "sincos2d":
            grid = jnp.asarray(posemb_sincos_2d(h, w, d, layout=self.sincos_layout))[None]
            return jnp.zeros((1, self._prefix, d)), grid
        table = self.pos_embedding
        if (h, w) != self.grid:
            table = resize_posemb(table, (h, w), old_grid=self.grid, num_prefix=self._prefix)
        return table[:, :self._prefix], table[:, self._prefix:]

    def embed(self, x):
        """Patch tokens with their position embeddings: (B, H, W, C) -> (B, h*w, D)."""
        dtype = self.dtype or jnp.float32
        t = self.embedding(jnp.asarray(x, dtype))  # (B, h, w, D)
        b, h, w, d = t.shape
        _, grid = self._table(h, w)
        return t.reshape(b, h * w, d) + grid.astype(t.dtype)

    def encode_tokens(self, tokens, *, train: bool = False):
        """Embedded patch tokens (B, n, D), any subset -> the final-normed sequence
        (B, P + n, D): the class token (with its position row) first when the model has one."""
        if self.has_class_token:
            prefix, _ = self._table(*self.grid)
            cls = (self.cls + prefix).astype(tokens.dtype)
            tokens = jnp.concatenate([jnp.tile(cls, (tokens.shape[0], 1, 1)), tokens], 1)
        tokens = self.pos_dropout(tokens, deterministic=not train)
        return self.Transformer(tokens, train=train)

    def _drop_patches(self, tokens):
        """FLIP: a random int(n (1 - patch_dropout)) of the n tokens per example, in order of
        the noise (so no token is favoured)."""
        b, n, d = tokens.shape
        keep = max(1, int(n * (1 - self.patch_dropout)))
        noise = jax.random.uniform(self.make_rng("dropout"), (b, n))
        ids = jnp.argsort(noise, axis=1)[:, :keep]  # (B, keep)
        return jnp.take_along_axis(tokens, ids[..., None], axis=1)

    def _pool(self, encoded):
        if self.pool == "cls":
            return encoded[:, 0]
        if self.pool == "gap":
            return jnp.mean(encoded[:, self._prefix:], axis=1)
        return self.MAPHead_0(encoded)

    # -- entry points

    def __call__(self, x, *, train: bool = False):
        tokens = self.embed(x)
        if train and self.patch_dropout > 0:
            tokens = self._drop_patches(tokens)
        encoded = self.encode_tokens(tokens, train=train)
        pooled = self._pool(encoded)
        aux = {"tokens": encoded, "patch_tokens": encoded[:, self._prefix:],
               "pre_logits": pooled.astype(jnp.float32)}
        out = self.head(pooled) if self.num_classes else pooled
        return out.astype(jnp.float32), aux

    def features(self, x):
        """The pooled representation, (B, D) float32, in eval mode."""
        return self(x, train=False)[1]["pre_logits"]

    def tokens(self, x, *, merge: int = 1):
        """Final-normed patch tokens (B, h*w, D) in eval mode; merge=f pixel-shuffles f x f
        neighbours into one token: (B, (h/f)*(w/f), f*f*D)."""
        (ph, pw) = self.config()["patch_size"]
        grid = (x.shape[1] // ph, x.shape[2] // pw)
        t = self.encode_tokens(self.embed(x), train=False)[:, self._prefix:]
        return (pixel_shuffle_merge(t, grid, merge) if merge > 1 else t).astype(jnp.float32)


# ---------------------------------------------------------------------------- weight files


def save(path: str, variables) -> None:
    """`variables` as one safetensors file of '/'-joined keys (`ssl_gen.models.weights`)."""
    weights.save(path, variables, model="vit")


def load(path: str, *, num_heads: int | None = None, with_config: bool = False):
    """The variables of a weight file, as the nested dict `Model.apply` takes.

    `path` is a file `save` wrote, or a published PyTorch-format ViT checkpoint (timm, the
    Hugging Face Hub's `model.safetensors` / `pytorch_model.bin`, the MAE release's `.pth`,
    read without PyTorch by `ssl_gen.models.pretrained`); `num_heads` for one of a
    non-standard width without a `config.json` beside it. `with_config=True` returns
    `(variables, kwargs)`, the kwargs of the `Model` the published weights imply (None for
    ssl_gen's own files, whose config is the run's).
    """
    from ssl_gen.models import pretrained

    if pretrained.is_ssl_gen_file(path):
        variables, kwargs = weights.load(path, model="vit"), None
    else:
        variables, kwargs = pretrained.load_vit(path, num_heads=num_heads)
    return (variables, kwargs) if with_config else variables


# ---------------------------------------------------------------- scan <-> unrolled layout


def stack_blocks(params: Mapping) -> dict:
    """Unrolled parameters ("encoderblock_0", ...) re-laid-out for `scan=True`: every dict
    holding "encoderblock_{i}" gets one "encoderblock" with the blocks stacked on axis 0."""
    out = {}
    n = sum(1 for k in params if k.startswith("encoderblock_"))
    for k, v in params.items():
        if k.startswith("encoderblock_"):
            continue
        out[k] = stack_blocks(v) if isinstance(v, Mapping) else v
    if n:
        blocks = [params[f"encoderblock_{i}"] for i in range(n)]
        out["encoderblock"] = jax.tree.map(lambda *a: jnp.stack(a), *blocks)
    return out


def unstack_blocks(params: Mapping) -> dict:
    """The inverse of `stack_blocks`: scan parameters to the unrolled layout."""
    out = {}
    for k, v in params.items():
        if k == "encoderblock":
            depth = jax.tree.leaves(v)[0].shape[0]
            for i in range(depth):
                out[f"encoderblock_{i}"] = jax.tree.map(lambda a, i=i: a[i], v)
        else:
            out[k] = unstack_blocks(v) if isinstance(v, Mapping) else v
    return out
