"""CPC for images on a grid of overlapping patches (van den Oord, Li & Vinyals 2018, Sec. 3.3;
Hénaff et al. 2020, "Data-Efficient Image Recognition with Contrastive Predictive Coding",
Sec. 2 and Fig. 2: "CPC v2").

The image x (B, H, W, C) is cut into a grid of `patch` x `patch` patches at stride
`stride` (CPC v1 / v2: 64-pixel patches at stride 32 of 256 crops, a 7x7 grid, half
overlapping), R x S of them (R = (H - patch) / stride + 1, likewise S). Then

1. a patch encoder f, shared by every patch (here a small MLP on the flattened patch; CPC
   v2's is a ResNet on 64x64 pixels): z_{i,j} (B, R, S, Dz);
2. a context network g over the grid -> c_{i,j} (B, R, S, Dc), the causal transformer of
   `models.cpc` with a mask in place of its frame order, by `order`:
   "rows": c_{i,j} reads every z_{i',j'} with i' <= i (all columns of the rows at and above
   i, the receptive field of CPC's PixelCNN-style masked convolutions); "column": only the
   column j, rows i' <= i (each column a 1-D CPC sequence read top-down);
3. one linear map W_k (Dc -> Dz, no bias) per offset k in `offsets()`, the score of a
   candidate z for anchor (i, j) being z^T W_k c_{i,j}; W_k c_{i,j} predicts z_{i+k,j},
   the patch k rows below (`ssl_gen.objectives.cpc` pairs them).

Causality. c_{i,j} reads pixel rows up to i stride + patch - 1, and the target patch
i + k starts at pixel row (i + k) stride, so they share no pixel iff k stride >= patch.
The default `first_offset` None is the smallest such k, ceil(patch / stride) (2 for
CPC's patches at half their side): with overlapping targets a context could match its
target by the pixels they share, as the 1-D CPC here did on MNIST-1D before its frames
stopped overlapping (`models.cpc`'s VARIANTS comment).
tests/models/test_cpc_grid.py checks by Jacobian that c_{i,j} reads no pixel below row
i stride + patch - 1 (nor, for "column", outside its column's pixels).

Features (`FeatureExtractor`, for the probes), by `pool`: "z_mean", the patch encodings
averaged over the grid (CPC v2's linear evaluation reads the encoder f_theta, spatially
mean-pooled, not the context network); "c_mean", the contexts averaged over the grid;
"z_grid", every patch encoding concatenated (B, R S Dz), which keeps where each patch is.

Entry points: `__call__(x, *, train=False) -> (predictions (K, B, R, S, Dz), aux)`, aux
{"z": (B, R, S, Dz), "c": (B, R, S, Dc)}, predictions[n] = W_{offsets()[n]} c;
`encode(x) -> z`, `context_vectors(z) -> c`, `features(x)`; `grid(h, w)`, `offsets()`,
`mask(r, s)` and `last_row(i)` are plain methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.models.cpc import CausalTransformer

ORDERS = ("rows", "column")
POOLS = ("z_mean", "c_mean", "z_grid")

# "digits": 3x3 patches at stride 1 of the 8x8 digits, a 6x6 grid (each patch shares 6 of
# its 9 pixels with its neighbours); offsets k = 3, 4, 5, the first rows that share no
# pixel with the context. "tiny" is for tests and `runlocal`.
VARIANTS = {
    "digits": dict(patch=3, stride=1, widths=(64, 64), context_dim=64, num_steps=3,
                   depth=2, heads=4),
    "tiny": dict(patch=3, stride=1, widths=(8,), context_dim=8, num_steps=2, depth=1,
                 heads=2),
}


class Model(nn.Module):
    """The patch-grid CPC model. Fields left None come from `variant`; explicit ones win."""

    variant: str | None = "digits"  # a key of VARIANTS
    patch: int | None = None  # patch side, pixels
    stride: int | None = None  # between patches, pixels
    widths: Sequence[int] | None = None  # the patch MLP's widths; the last is Dz
    context_dim: int | None = None  # Dc
    num_steps: int | None = None  # K, the number of offsets
    first_offset: int | None = None  # None: ceil(patch / stride), no shared pixel
    depth: int | None = None  # transformer blocks
    heads: int | None = None
    order: str = "rows"  # "rows" | "column" (module docstring)
    pool: str = "z_mean"  # features(): "z_mean" | "c_mean" | "z_grid"

    def config(self) -> dict:
        """The resolved architecture: the variant's fields with explicit ones applied."""
        if self.variant is not None and self.variant not in VARIANTS:
            raise ValueError(f"cpc_grid: unknown variant {self.variant!r}; known: "
                             f"{', '.join(VARIANTS)}")
        cfg = dict(VARIANTS[self.variant or "digits"])
        for name in ("patch", "stride", "widths", "context_dim", "num_steps", "depth",
                     "heads"):
            if getattr(self, name) is not None:
                cfg[name] = getattr(self, name)
        cfg["widths"] = tuple(int(w) for w in cfg["widths"])
        if not (cfg["patch"] >= 1 and 1 <= cfg["stride"] <= cfg["patch"]):
            raise ValueError(f"cpc_grid: need patch >= stride >= 1, got patch={cfg['patch']} "
                             f"and stride={cfg['stride']}")
        if not cfg["widths"] or cfg["num_steps"] < 1:
            raise ValueError("cpc_grid: widths must be non-empty and num_steps >= 1")
        first = self.first_offset
        cfg["first_offset"] = math.ceil(cfg["patch"] / cfg["stride"]) if first is None else first
        if cfg["first_offset"] < 1:
            raise ValueError(f"cpc_grid: first_offset={first!r} must be >= 1")
        if self.order not in ORDERS:
            raise ValueError(f"cpc_grid: order={self.order!r} is not one of {ORDERS}")
        if self.pool not in POOLS:
            raise ValueError(f"cpc_grid: pool={self.pool!r} is not one of {POOLS}")
        return cfg

    def offsets(self) -> tuple[int, ...]:
        """The rows below each prediction step reaches: first_offset, ..., + K - 1."""
        cfg = self.config()
        return tuple(range(cfg["first_offset"], cfg["first_offset"] + cfg["num_steps"]))

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """(R, S): the patch grid of an image of that size (ValueError if it has no room
        for the largest offset)."""
        cfg = self.config()
        p, s = cfg["patch"], cfg["stride"]
        if height < p or width < p or (height - p) % s or (width - p) % s:
            raise ValueError(f"cpc_grid: a {height}x{width} image does not tile into "
                             f"{p}x{p} patches at stride {s}")
        r, c = (height - p) // s + 1, (width - p) // s + 1
        if r <= self.offsets()[-1]:
            raise ValueError(f"cpc_grid: a grid of {r} rows has no row {self.offsets()[-1]} "
                             f"below the first (offsets {self.offsets()}); use fewer "
                             "num_steps or a smaller stride")
        return r, c

    def last_row(self, i: int) -> int:
        """The last pixel row that z_{i,.} and c_{i,.} read."""
        cfg = self.config()
        return i * cfg["stride"] + cfg["patch"] - 1

    def mask(self, r: int, s: int) -> np.ndarray:
        """(R S, R S) booleans over the raster-ordered cells: [a, b] True where cell a's
        context may read cell b (rows: row(b) <= row(a); column: also the same column)."""
        row, col = np.divmod(np.arange(r * s), s)
        ok = row[None, :] <= row[:, None]
        if self.order == "column":
            ok &= col[None, :] == col[:, None]
        return ok

    def setup(self):
        cfg = self.config()
        self.layers = [nn.Dense(w, name=f"dense_{i}") for i, w in enumerate(cfg["widths"])]
        self.ar = CausalTransformer(cfg["context_dim"], cfg["depth"], cfg["heads"],
                                    name="transformer")
        self.predictors = [nn.Dense(cfg["widths"][-1], use_bias=False, name=f"W_{k}")
                           for k in self.offsets()]

    def patches(self, x) -> jax.Array:
        """(B, R, S, patch * patch * C): each patch flattened."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"cpc_grid: input must be (B, H, W[, C]), got shape {x.shape}")
        self.grid(*x.shape[1:3])
        cfg = self.config()
        return jax.lax.conv_general_dilated_patches(
            x, (cfg["patch"],) * 2, (cfg["stride"],) * 2, "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def encode(self, x):
        """z (B, R, S, Dz): the patch MLP (ReLU between layers, none after the last)."""
        h = self.patches(x)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = nn.relu(h)
        return h

    def context_vectors(self, z):
        """c (B, R, S, Dc): the masked transformer over the raster-ordered cells."""
        b, r, s, d = z.shape
        c = self.ar(z.reshape(b, r * s, d), mask=self.mask(r, s))  # (B, R S, Dc)
        return c.reshape(b, r, s, -1)

    def __call__(self, x, *, train: bool = False):
        z = self.encode(x)  # (B, R, S, Dz)
        c = self.context_vectors(z)  # (B, R, S, Dc)
        preds = jnp.stack([w(c) for w in self.predictors])  # (K, B, R, S, Dz)
        return preds, {"z": z, "c": c}

    def features(self, x):
        """The frozen representation by `pool` (module docstring), float32 (B, D)."""
        z = self.encode(x)
        if self.pool == "z_mean":
            return z.mean(axis=(1, 2))
        if self.pool == "z_grid":
            return z.reshape(z.shape[0], -1)
        return self.context_vectors(z).mean(axis=(1, 2))
