r"""Critics f(x, y) for the mutual-information bounds (`ssl_gen.objectives.mi_bounds`).

Each critic maps a batch x (N, dx) and a batch y (M, dy) to the score matrix of every pair,
`scores[i, j] = f(x_i, y_j)`, (N, M): with paired batches (N = M) the positives lie on the
diagonal, which is what every bound expects. The two architectures of Poole et al. (2019),
"On Variational Bounds of Mutual Information", Sec. 4 (their reference colab's settings:
2 hidden layers of 256 ReLU units, 32-dimensional embeddings):

- `Separable`: f(x, y) = g(x)^T h(y), two MLPs; N + M forward passes and one matrix
  product. It can only represent critics of low "rank", which is what contrastive
  representation learning (CPC, SimCLR) uses.
- `Joint` (the colab's "concat"): f(x, y) = MLP([x, y]), evaluated on all N M pairs;
  more expressive (it can represent the Gaussian log density ratio exactly up to the
  MLP's approximation), N M forward passes.

`Model(kind=...)` picks one by name (config -> code in one hop), `__call__(x, y, *,
train=False) -> (scores, aux)`. `Baseline` is the learned log a(y) of TUBA and the
interpolated bound: an MLP of y to one number per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU MLP: Dense(h) + relu for each h in `hidden`, then a linear Dense(out)."""

    hidden: Sequence[int] = (256, 256)
    out: int = 1

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class Separable(nn.Module):
    """f(x, y) = g(x)^T h(y), g and h MLPs with `hidden` layers to `embed_dim` outputs."""

    hidden: Sequence[int] = (256, 256)
    embed_dim: int = 32

    @nn.compact
    def __call__(self, x, y, *, train: bool = False):
        del train
        gx = MLP(tuple(self.hidden), self.embed_dim, name="g")(x)  # (N, E)
        hy = MLP(tuple(self.hidden), self.embed_dim, name="h")(y)  # (M, E)
        return gx @ hy.T, {"gx": gx, "hy": hy}  # (N, M)


class Joint(nn.Module):
    """f(x, y) = MLP([x, y]) on every pair (x_i, y_j): N M forward passes."""

    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, x, y, *, train: bool = False):
        del train
        n, m = x.shape[0], y.shape[0]
        pairs = jnp.concatenate([jnp.broadcast_to(x[:, None, :], (n, m, x.shape[-1])),
                                 jnp.broadcast_to(y[None, :, :], (n, m, y.shape[-1]))],
                                axis=-1)  # (N, M, dx + dy), pairs[i, j] = [x_i, y_j]
        scores = MLP(tuple(self.hidden), 1, name="f")(pairs)[..., 0]  # (N, M)
        return scores, {}


KINDS = {"separable": Separable, "joint": Joint}


class Model(nn.Module):
    """The critic named by `kind` ("separable" or "joint"); `embed_dim` is the separable
    critic's only."""

    kind: str = "separable"
    hidden: Sequence[int] = (256, 256)
    embed_dim: int = 32

    @nn.compact
    def __call__(self, x, y, *, train: bool = False):
        if self.kind not in KINDS:
            raise ValueError(f"critics: unknown kind {self.kind!r}; known: "
                             f"{', '.join(KINDS)}")
        kwargs = {"embed_dim": self.embed_dim} if self.kind == "separable" else {}
        return KINDS[self.kind](hidden=tuple(self.hidden), name="critic", **kwargs)(
            x, y, train=train)


class Baseline(nn.Module):
    """log a(y): an MLP of y (M, dy) -> (M,), the learned baseline of TUBA / I_alpha
    (the colab's "unnormalized" baseline: 2 hidden layers of 512 ReLU units)."""

    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, y):
        return MLP(tuple(self.hidden), 1)(y)[:, 0]
