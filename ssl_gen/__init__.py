"""ssl_gen: self-supervised learning, generative models and Monte Carlo gradient estimators.

Subpackages (imports go one way: train -> {objectives, evals, data} -> {models, estimators}
-> structured; nothing imports train):

- `ssl_gen.estimators`: gradient estimators for E_{z ~ p_theta}[f(z)] as jax.grad transforms.
- `ssl_gen.structured`: combinatorial latents (spanning trees).
- `ssl_gen.models`: pure Flax Linen modules, each `Model(...)` returning `(output, aux)`.
- `ssl_gen.objectives`: losses `loss_fn(params, batch, rng, *, model, **cfg) -> (loss, aux)`.
- `ssl_gen.evals`: evaluations run by the trainer (IWAE NLL, image grids, ...).
- `ssl_gen.data`: the embedded datasets as TF-free tfds builders, and the input pipeline.
- `ssl_gen.train`: the trainer (`python -m ssl_gen.train.main --config=... --workdir=...`).
"""

__version__ = "0.1.0"
