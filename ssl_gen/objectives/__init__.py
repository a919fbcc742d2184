"""Losses, one file per method: `loss_fn(params, batch, rng, *, model, **cfg) -> (loss, aux)`.

`aux` is a dict of scalar metrics (already averaged over the batch's real examples).
The estimator an objective uses is a config value resolved in one place: `make_estimator`.
"""

from ssl_gen.objectives.estimator_config import make_estimator

__all__ = ["make_estimator"]
