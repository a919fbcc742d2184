r"""The VQGAN objective as two parts: the generator (autoencoder), then the discriminator.

Esser, Rombach & Ommer (2021), "Taming Transformers", eq. 5-7, with taming-transformers'
`VQLPIPSWithDiscriminator` (taming/modules/losses/vqperceptual.py) as the reference for
what the paper leaves out. Part `generator` owns `params/generator/...` (encoder, codebook,
decoder: `ssl_gen.models.vqgan`); part `discriminator` owns `params/discriminator/...`. Each
step updates the generator, then the discriminator against the *updated* generator's
reconstructions (taming's optimizer_idx 0, then 1).

Generator loss, with u the images in unit scale and x̂ the reconstruction:

  L_rec = l1_weight * mean|x̂ - u| + perceptual_weight * P(x̂, u)
  L_G   = L_rec + [step >= disc_start] * lambda * disc_weight * L_GAN + vq_loss

- P is a perceptual loss with no downloaded network (`ssl_gen.models.perceptual`: "ssim" =
  1 - SSIM, the default; "fourier_l1"; "random_conv"; or "none");
- L_GAN = mean softplus(-D(x̂)) ("non_saturating") or mean -D(x̂) ("hinge"), D's patch
  logits averaged;
- lambda = clip(||grad_{W_L} L_rec|| / (||grad_{W_L} L_GAN|| + 1e-4), 0, max_adaptive_weight)
  with W_L the decoder's last conv kernel (`vqgan.LAST_LAYER`), detached (stop_gradient):
  eq. 7 and taming's `calculate_adaptive_weight` (clamp to [0, 1e4]). Both gradients come
  from one `jax.vjp` of W_L -> (L_rec, L_GAN), whose primal outputs are also the loss's
  terms, so the forward pass is shared. `adaptive_weight=False` uses lambda = 1;
- vq_loss is the quantizer's (`ssl_gen.models.quantizers`: beta * commitment, plus the
  codebook term for "vq"); its EMA statistics (`"vq_stats"`) are updated here and only here.

Before `disc_start` the GAN term is exactly zero (its weight is 0) and the generator trains
as a plain VQ autoencoder on L_rec + vq_loss (taming's `disc_factor`, adopt_weight).

Discriminator loss (taming halves both): on D(u) (real) and D(sg[x̂]) (fake, from the
generator with train=False: no EMA update), per patch, averaged over patches and examples:

  "hinge":          0.5 * (relu(1 - D(u)) + relu(1 + D(x̂)))
  "non_saturating": 0.5 * (softplus(-D(u)) + softplus(D(x̂)))

plus the optional R1 penalty (Mescheder et al. 2018) `r1_weight / 2 * E ||grad_u sum D(u)||²`
(the patch logits summed per image). The discriminator starts at `disc_start - disc_warmup`
(a warm-up: it learns against the autoencoder before its term reaches the generator);
`config.parts.discriminator.start_step` overrides it.

Metrics: generator `l1`, `perceptual`, `recon_mse`, `ssim`, `gan_loss` (L_GAN, also
before disc_start), `adaptive_weight` (lambda), `gan_term` (what L_G adds), `vq_loss` and
the quantizer's usage; discriminator `d_real`, `d_fake`, `accuracy`, `r1`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen.models import perceptual as perceptual_lib
from ssl_gen.models.quantizers import RNG
from ssl_gen.models.vqgan import LAST_LAYER
from ssl_gen.objectives.elbo import masked_mean
from ssl_gen.objectives.parts import Part
from ssl_gen.objectives.vqvae import METRICS, reconstruction_mse

LOSSES = ("hinge", "non_saturating")
PERCEPTUAL = (*perceptual_lib.LOSSES, "none")
EPS = 1e-4  # taming's calculate_adaptive_weight


def _number(name, v, lo=0.0):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= lo:
        raise ValueError(f"vqgan: {name} must be a number >= {lo}, got {v!r}")


def _check(loss, perceptual, disc_start, disc_warmup, weights, input_key):
    if loss not in LOSSES:
        raise ValueError(f"vqgan: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if perceptual not in PERCEPTUAL:
        raise ValueError(f"vqgan: perceptual must be one of {', '.join(PERCEPTUAL)}, got "
                         f"{perceptual!r}")
    for name, v in (("disc_start", disc_start), ("disc_warmup", disc_warmup)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"vqgan: {name} must be an int >= 0, got {v!r}")
    for name, v in weights.items():
        _number(name, v)
    if not isinstance(input_key, str):
        raise ValueError(f"vqgan: input_key must be a batch field name, got {input_key!r}")


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _set(tree, path, value):
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def generator_adversarial(d_fake, loss: str):
    """The generator's adversarial loss per logit: softplus(-D) or -D (hinge)."""
    return -d_fake if loss == "hinge" else jax.nn.softplus(-d_fake)


def discriminator_per_logit(d_real, d_fake, loss: str):
    """The discriminator's loss per patch logit, halved as taming's (module docstring)."""
    if loss == "hinge":
        return 0.5 * (jax.nn.relu(1.0 - d_real) + jax.nn.relu(1.0 + d_fake))
    return 0.5 * (jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake))


def adaptive_weight(g_rec, g_gan, max_weight: float = 1e4):
    """lambda = clip(||g_rec|| / (||g_gan|| + 1e-4), 0, max_weight), detached."""
    lam = jnp.linalg.norm(g_rec.ravel()) / (jnp.linalg.norm(g_gan.ravel()) + EPS)
    return jax.lax.stop_gradient(jnp.clip(lam, 0.0, max_weight))


def _per_image(x):  # (B, ...) -> (B,)
    return jnp.mean(x.reshape(x.shape[0], -1), -1)


def generator_loss(params, batch, rng, *, model, collections, step, loss: str = "hinge",
                   perceptual: str = "ssim", l1_weight: float = 1.0,
                   perceptual_weight: float = 1.0, disc_weight: float = 0.8,
                   disc_start: int = 0, adaptive: bool = True,
                   max_adaptive_weight: float = 1e4, input_key: str = "image"
                   ) -> tuple[jax.Array, dict[str, Any]]:
    """L_G of the module docstring; returns the new EMA statistics in aux["collections"].
    With disc_weight = 0 the discriminator is not applied at all (no GAN term, lambda = 0)."""
    x = batch[input_key]
    mask = batch.get("example_mask")
    mutable = list(collections)
    perc_fn = perceptual_lib.LOSSES.get(perceptual)
    gan_on = disc_weight != 0

    def terms(kernel):  # W_L -> ((L_rec, L_GAN), everything else)
        p = _set(params, LAST_LAYER, kernel)
        out = model.apply({**p, **collections}, x, train=True, mask=mask, rngs={RNG: rng},
                          mutable=mutable or False)
        (x_hat, aux), new = out if mutable else (out, {})
        u = aux["target"]
        l1 = masked_mean(_per_image(jnp.abs(x_hat - u)), mask)
        perc = (masked_mean(perc_fn(x_hat, u), mask) if perc_fn is not None
                else jnp.zeros((), jnp.float32))
        rec = l1_weight * l1 + perceptual_weight * perc
        if gan_on:
            d_fake = model.apply(p, x_hat, method=model.discriminate)
            gan = masked_mean(_per_image(generator_adversarial(d_fake, loss)), mask)
        else:
            gan = jnp.zeros((), jnp.float32)
        return (rec, gan), (x_hat, u, aux, new, l1, perc)

    kernel = _get(params, LAST_LAYER)
    (rec, gan), pull, (x_hat, u, aux, new, l1, perc) = jax.vjp(terms, kernel, has_aux=True)
    if gan_on and adaptive:
        (g_rec,) = pull((jnp.ones_like(rec), jnp.zeros_like(gan)))
        (g_gan,) = pull((jnp.zeros_like(rec), jnp.ones_like(gan)))
        lam = adaptive_weight(g_rec, g_gan, max_adaptive_weight)
    else:
        lam = jnp.full((), float(gan_on), jnp.float32)
    on = (step >= disc_start).astype(jnp.float32)
    gan_term = on * disc_weight * lam * gan
    total = rec + gan_term + aux["loss"]
    sg = jax.lax.stop_gradient
    metrics = {"l1": l1, "perceptual": perc, "rec_loss": rec,
               "recon_mse": masked_mean(reconstruction_mse(sg(x_hat), u), mask),
               "ssim": masked_mean(perceptual_lib.ssim(sg(x_hat), u), mask)
               if min(u.shape[1:3]) >= perceptual_lib.WINDOW else jnp.nan,
               "gan_loss": gan, "adaptive_weight": lam, "gan_term": gan_term,
               "vq_loss": aux["loss"], **{k: aux[k] for k in METRICS if k in aux}}
    return total, {**metrics, "collections": {k: new[k] for k in collections}}


def discriminator_loss(params, batch, rng, *, model, collections, loss: str = "hinge",
                       r1_weight: float = 0.0, input_key: str = "image"
                       ) -> tuple[jax.Array, dict[str, Any]]:
    """The discriminator's loss on real u against the current reconstructions (held fixed)."""
    del rng
    x = batch[input_key]
    mask = batch.get("example_mask")
    x_hat, aux = model.apply({**params, **collections}, x, train=False, mask=mask)
    x_hat, u = jax.lax.stop_gradient(x_hat), aux["target"]
    disc = lambda v: model.apply(params, v, method=model.discriminate)
    d_real, d_fake = disc(u), disc(x_hat)
    total = masked_mean(_per_image(discriminator_per_logit(d_real, d_fake, loss)), mask)
    out = {"d_real": masked_mean(_per_image(d_real), mask),
           "d_fake": masked_mean(_per_image(d_fake), mask),
           "accuracy": masked_mean(0.5 * (_per_image((d_real > 0).astype(jnp.float32))
                                          + _per_image((d_fake < 0).astype(jnp.float32))),
                                   mask)}
    if r1_weight:
        grad_u = jax.grad(lambda v: jnp.sum(disc(v)))(u)  # per image: logits depend on it only
        r1 = masked_mean(jnp.sum(grad_u.reshape(u.shape[0], -1) ** 2, -1), mask)
        total = total + 0.5 * r1_weight * r1
        out["r1"] = r1
    return total, out


def parts(*, model, loss: str = "hinge", perceptual: str = "ssim", l1_weight: float = 1.0,
          perceptual_weight: float = 1.0, disc_weight: float = 0.8, disc_start: int = 0,
          disc_warmup: int = 0, adaptive: bool = True, max_adaptive_weight: float = 1e4,
          r1_weight: float = 0.0, input_key: str = "image") -> list[Part]:
    """The generator part, then the discriminator part (see the module docstring)."""
    _check(loss, perceptual, disc_start, disc_warmup,
           dict(l1_weight=l1_weight, perceptual_weight=perceptual_weight,
                disc_weight=disc_weight, max_adaptive_weight=max_adaptive_weight,
                r1_weight=r1_weight), input_key)
    if not isinstance(adaptive, bool):
        raise ValueError(f"vqgan: adaptive must be True or False, got {adaptive!r}")
    if perceptual != "none" and perceptual_weight == 0 and l1_weight == 0:
        raise ValueError("vqgan: l1_weight and perceptual_weight are both 0: nothing "
                         "trains the reconstruction")
    gen = functools.partial(
        generator_loss, model=model, loss=loss, perceptual=perceptual, l1_weight=l1_weight,
        perceptual_weight=perceptual_weight, disc_weight=disc_weight, disc_start=disc_start,
        adaptive=adaptive, max_adaptive_weight=max_adaptive_weight, input_key=input_key)
    disc = functools.partial(discriminator_loss, model=model, loss=loss, r1_weight=r1_weight,
                             input_key=input_key)
    return [
        Part("generator", gen, params=(r"^params/generator/",)),
        Part("discriminator", disc, params=(r"^params/discriminator/",),
             start_step=max(0, disc_start - disc_warmup)),
    ]
