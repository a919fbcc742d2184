"""Encoder + projection head (+ predictor) for the contrastive and self-distillation
objectives of `ssl_gen.objectives.contrastive`: SimCLR (Chen et al. 2020), BYOL (Grill et
al. 2020), MoCo v2 (Chen, Fan, Girshick & He 2020) and MoCo v3 (Chen, Xie & He 2021).

Layout (the three papers share it):

    x (B, H, W, C) -> encoder f -> h (B, D)       the representation kept after training
                   -> projector g -> z (B, P)     what the loss compares (SimCLR, the target)
                   -> predictor q -> p (B, P)     BYOL / MoCo v3 only (`predictor_hidden`)

- The encoder is a small residual conv net (a ResNet in miniature, He et al. 2016: a 3x3
  stem of `stem_width` channels at full resolution, then one stage per entry of `widths`,
  each `blocks` basic blocks, the first strided 2) ending in global average pooling, so
  D = widths[-1]. On 8x8 digits the default stem 32, widths (64, 128) goes 8x8 -> 4x4 ->
  2x2 (ResNet keeps its first stage at full resolution; here that stage would cost the most
  of the whole net and see the least).
- Heads are the references' MLPs: Linear -> BatchNorm -> ReLU, repeated, then a last Linear
  (SimCLR's 2-layer head, Sec. 2.1 and its code's `projection_head`; BYOL's projector and
  predictor, Sec. 3.3: hidden 4096, out 256 in the paper, smaller here by config; MoCo v3's
  projector has 3 layers, its predictor 2). BatchNorm is in the heads (and the encoder)
  as in these three references; MoCo v2's head is Linear -> ReLU -> Linear with no
  BatchNorm (`projector_norm=False`, its code's `nn.Sequential(Linear, ReLU, fc)`).
  Under this project's jit + NamedSharding data parallelism the
  statistics of a train-mode forward are those of the *global* batch (SimCLR's "global
  BN", Sec. 2.2) with no cross-replica code, so the loss does not depend on the device
  count; and BYOL's collapse is kept at bay in practice by the BN in its heads.

Entry points: `__call__(x, *, train=False) -> (z, aux)`, aux {"features": h, "projection":
z, and "prediction": p when there is a predictor}; `project(x, train=...) -> (h, z)` (the
target / momentum branch: no predictor); `features(x)`, h in eval mode (running BatchNorm
statistics), the `FeatureExtractor` protocol the probes call. Train-mode calls need
`mutable=["batch_stats"]`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# BatchNorm as the references' (SimCLR's TF code: decay 0.9, eps 1e-5; BYOL: 0.9, 1e-5).
BN = dict(momentum=0.9, epsilon=1e-5)


class Block(nn.Module):
    """ResNet's basic block: conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv-BN when the shape
    changes), ReLU."""

    width: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, name=name, **BN)
        y = nn.Conv(self.width, (3, 3), self.stride, use_bias=False, name="conv1")(x)
        y = nn.relu(norm("bn1")(y))
        y = nn.Conv(self.width, (3, 3), use_bias=False, name="conv2")(y)
        y = norm("bn2")(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = nn.Conv(self.width, (1, 1), self.stride, use_bias=False, name="proj")(x)
            x = norm("bn_proj")(x)
        return nn.relu(x + y)


class Encoder(nn.Module):
    """(B, H, W, C) -> (B, widths[-1]): stem, residual stages (each halving the resolution),
    global average pool."""

    stem_width: int = 32
    widths: Sequence[int] = (64, 128)
    blocks: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.stem_width, (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, name="stem_bn", **BN)(x))
        for s, w in enumerate(self.widths):
            for b in range(self.blocks):
                stride = 2 if b == 0 else 1
                x = Block(w, stride, name=f"stage{s}_block{b}")(x, train)
        return jnp.mean(x, axis=(1, 2))  # (B, widths[-1])


class MLP(nn.Module):
    """`layers` Linear layers; all but the last followed by BatchNorm (when `norm`) and ReLU."""

    hidden: int
    out: int
    layers: int = 2
    norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(self.layers - 1):
            x = nn.Dense(self.hidden, name=f"dense{i}")(x)
            if self.norm:
                x = nn.BatchNorm(use_running_average=not train, name=f"bn{i}", **BN)(x)
            x = nn.relu(x)
        return nn.Dense(self.out, name=f"dense{self.layers - 1}")(x)


class Model(nn.Module):
    """Encoder, projector and (when `predictor_hidden`) predictor; see the module docstring."""

    stem_width: int = 32  # encoder: the full-resolution stem
    widths: Sequence[int] = (64, 128)  # encoder stages, each strided 2
    blocks: int = 1  # basic blocks per stage
    projector_hidden: int = 512
    projector_out: int = 128
    projector_layers: int = 2  # SimCLR, BYOL, MoCo v2: 2; MoCo v3: 3
    projector_norm: bool = True  # BatchNorm in the projector's hidden layers (MoCo v2: none)
    predictor_hidden: int | None = None  # None: no predictor (SimCLR); BYOL, MoCo v3: an int
    predictor_layers: int = 2

    def setup(self):
        if (not self.widths or any(int(w) < 1 for w in self.widths) or self.blocks < 1
                or self.stem_width < 1):
            raise ValueError(f"contrastive model: stem_width={self.stem_width!r} and "
                             f"widths={tuple(self.widths)!r} must be ints >= 1 and "
                             f"blocks={self.blocks!r} >= 1")
        if self.projector_layers < 1 or self.predictor_layers < 1:
            raise ValueError("contrastive model: projector_layers and predictor_layers must "
                             "be >= 1")
        self.encoder = Encoder(self.stem_width, tuple(self.widths), self.blocks)
        self.projector = MLP(self.projector_hidden, self.projector_out, self.projector_layers,
                             self.projector_norm)
        if self.predictor_hidden:
            self.predictor = MLP(self.predictor_hidden, self.projector_out,
                                 self.predictor_layers)

    @property
    def has_predictor(self) -> bool:
        return bool(self.predictor_hidden)

    def project(self, x, *, train: bool = False):
        """(h (B, D), z (B, P)): the encoder's features and their projection."""
        h = self.encoder(x, train)
        return h, self.projector(h, train)

    def __call__(self, x, *, train: bool = False):
        h, z = self.project(x, train=train)
        aux = {"features": h, "projection": z}
        if self.has_predictor:
            aux["prediction"] = self.predictor(z, train)
        return z, aux

    def features(self, x) -> jax.Array:
        """The encoder's output on x (B, H, W, C) in eval mode: (B, widths[-1]) float32."""
        return self.encoder(x, False).astype(jnp.float32)
