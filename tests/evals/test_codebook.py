"""The codebook eval (ssl_gen.evals.codebook) against a direct computation on the split.

Codes used and MSE are over the whole split, padding excluded, so they do not depend on the
eval batch size; the mean-image baseline is the NumPy formula.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals import EvalContext, codebook
from ssl_gen.models import vqvae


def _source(key, n):
    images = np.asarray(jax.random.randint(jax.random.key(key), (n, 8, 8, 1), 0, 17), np.uint8)
    return [{"image": im} for im in images]


def _batches(source, size):
    """Fixed-size batches with padding (a bright image, masked out) like the trainer's."""
    def gen():
        for start in range(0, len(source), size):
            part = [s["image"] for s in source[start:start + size]]
            mask = np.zeros(size, np.float32)
            mask[:len(part)] = 1.0
            part += [np.full((8, 8, 1), 16, np.uint8)] * (size - len(part))
            yield {"image": np.stack(part), "example_mask": mask}
    return gen


def test_usage_and_mse_over_the_whole_split_do_not_depend_on_the_batch_size():
    model = vqvae.Model(variant="tiny", num_codes=16, quantizer="ema")
    train, test = _source(0, 40), _source(1, 30)
    x = jnp.asarray(np.stack([s["image"] for s in test]))
    variables = model.init(jax.random.key(2), x[:1])
    state = {"params": {"params": variables["params"]},
             "collections": {"vq_stats": variables["vq_stats"]}}
    recon, aux = model.apply(variables, x)
    mse = float(jnp.mean((recon - aux["target"]) ** 2))
    used = len(np.unique(np.asarray(aux["indices"])))
    out = {}
    for size in (8, 30):
        ctx = EvalContext(model=model, rng=jax.random.key(3), step=0, workdir="",
                          eval_batches=_batches(test, size), train_source=train,
                          eval_source=test)
        out[size] = codebook.evaluate(state, ctx)
    for size in (8, 30):
        np.testing.assert_allclose(out[size]["mse"], mse, rtol=1e-5)
        assert out[size]["codes_used"] == used
        assert out[size]["codes_used_fraction"] == used / 16
    np.testing.assert_allclose(out[8]["perplexity"], out[30]["perplexity"], rtol=1e-6)
    mean = np.mean([s["image"] / 16.0 for s in train], 0)
    expect = np.mean([np.mean((s["image"] / 16.0 - mean) ** 2) for s in test])
    np.testing.assert_allclose(out[8]["mse_mean_image"], expect, rtol=1e-5)
    assert out[8]["dead_fraction"] == 1.0  # no update yet: every EMA count is 0
    assert 1 <= out[8]["codes_used_random_init"] <= 16
