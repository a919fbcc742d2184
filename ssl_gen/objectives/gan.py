r"""The GAN objective as two parts: the discriminator, then the generator, in one step.

Part `discriminator` owns `params/discriminator/...`; part `generator` owns
`params/generator/...` (`ssl_gen.models.gan`). Each step updates the discriminator on a
batch of real examples against G(z) (G held fixed), then the generator against the *updated*
discriminator: the alternating updates of Goodfellow et al. (2014), Alg. 1, with k = 1.
Timing is config (`ssl_gen.train.objective`): `config.parts.discriminator.start_step`
delays the discriminator (the generator then trains against a fixed random one, and
VQGAN-style `disc_start` schedules are expressed the same way);
`config.parts.generator.every = 5` gives WGAN's n_critic = 5.

Losses, on discriminator logits D(x):
- "non_saturating" (Goodfellow et al. 2014, Sec. 3): D minimizes softplus(-D(x)) +
  softplus(D(G(z))) (the binary cross-entropy); G minimizes softplus(-D(G(z))) (maximizes
  log D(G(z)) rather than minimizing log(1 - D(G(z)))).
- "hinge" (Lim & Ye 2017; Miyato et al. 2018): D minimizes relu(1 - D(x)) + relu(1 + D(G(z)));
  G minimizes -D(G(z)).

Optional R1 penalty (Mescheder et al. 2018): `r1_weight / 2 * E ||grad_x D(x)||^2` on real
examples, added to the discriminator's loss.

Metrics: the discriminator's `d_real`/`d_fake` (mean logits) and `accuracy` (real scored
> 0, fake < 0), `r1` when used; the generator's loss.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.objectives.elbo import masked_mean
from ssl_gen.objectives.parts import Part

LOSSES = ("non_saturating", "hinge")


def _check(loss: str, r1_weight: float, input_key: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"gan: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if not (isinstance(r1_weight, (int, float)) and r1_weight >= 0):
        raise ValueError(f"gan: r1_weight must be a number >= 0, got {r1_weight!r}")
    if not isinstance(input_key, str):
        raise ValueError(f"gan: input_key must be a batch field name, got {input_key!r}")


def _fake(params, model, rng, n: int):
    z = jax.random.normal(rng, (n, model.z_dim))
    return model.apply(params, z, method=model.generate)


def discriminator_loss(params, batch, rng, *, model, loss: str = "non_saturating",
                       r1_weight: float = 0.0, input_key: str = "image"
                       ) -> tuple[jax.Array, dict[str, Any]]:
    """The discriminator's loss on real `batch[input_key]` against G(z) (G fixed)."""
    x = batch[input_key]
    mask = batch.get("example_mask")
    fake = jax.lax.stop_gradient(_fake(params, model, rng, x.shape[0]))
    disc = lambda v: model.apply(params, v, method=model.discriminate)
    d_real, d_fake = disc(x), disc(fake)
    if loss == "hinge":
        per = jax.nn.relu(1.0 - d_real) + jax.nn.relu(1.0 + d_fake)
    else:
        per = jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake)
    aux = {"d_real": masked_mean(d_real, mask), "d_fake": masked_mean(d_fake, mask),
           "accuracy": masked_mean(0.5 * ((d_real > 0).astype(jnp.float32)
                                          + (d_fake < 0).astype(jnp.float32)), mask)}
    total = masked_mean(per, mask)
    if r1_weight:
        x_float = jnp.asarray(x, jnp.float32)
        grad_x = jax.vmap(jax.grad(lambda v: disc(v[None])[0]))(x_float)
        r1 = masked_mean(jnp.sum(grad_x.reshape(x.shape[0], -1) ** 2, -1), mask)
        total = total + 0.5 * r1_weight * r1
        aux["r1"] = r1
    return total, aux


def generator_loss(params, batch, rng, *, model, loss: str = "non_saturating",
                   input_key: str = "image", **unused) -> tuple[jax.Array, dict[str, Any]]:
    """The generator's loss against the current discriminator, on as many samples as the
    batch has examples."""
    del unused
    n = batch[input_key].shape[0]
    d_fake = model.apply(params, _fake(params, model, rng, n), method=model.discriminate)
    per = -d_fake if loss == "hinge" else jax.nn.softplus(-d_fake)
    return jnp.mean(per), {}


def parts(*, model, loss: str = "non_saturating", r1_weight: float = 0.0,
          input_key: str = "image") -> list[Part]:
    """The discriminator part, then the generator part (see the module docstring)."""
    _check(loss, r1_weight, input_key)
    kw = dict(model=model, loss=loss, input_key=input_key)
    return [
        Part("discriminator", functools.partial(discriminator_loss, r1_weight=r1_weight, **kw),
             params=(r"^params/discriminator/",)),
        Part("generator", functools.partial(generator_loss, **kw),
             params=(r"^params/generator/",)),
    ]
