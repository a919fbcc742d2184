"""The prior objective: its NLL is the NumPy log-softmax sum over the codes, the loss is nats
per code, the metrics convert to bits per code, padding is excluded, and its one part owns
the GPT's parameters and none of the VQ-VAE's (so the trainer never updates those)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import vq_prior
from ssl_gen.objectives import prior
from ssl_gen.train.step import check_parts, split_variables


def _log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def test_nll_per_example_is_the_log_softmax_sum():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
    codes = rng.integers(0, 7, size=(3, 5))
    want = -np.take_along_axis(_log_softmax(logits.astype(np.float64)), codes[..., None],
                               -1)[..., 0].sum(-1)
    np.testing.assert_allclose(prior.nll_per_example(jnp.asarray(logits), jnp.asarray(codes)),
                               want, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    model = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                           prior=dict(variant="tiny"))
    x = jax.random.randint(jax.random.key(0), (4, 8, 8, 1), 0, 17).astype(jnp.float32)
    variables = model.init({"params": jax.random.key(1)}, x)
    return model, variables, x


def test_loss_is_nats_per_code_and_padding_is_excluded(tiny):
    model, variables, x = tiny
    params, collections = split_variables(variables)
    logits, aux = model.apply(variables, x)
    per = -np.take_along_axis(_log_softmax(np.asarray(logits, np.float64)),
                              np.asarray(aux["codes"])[..., None], -1)[..., 0].sum(-1)  # (4,)
    mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    loss, m = prior.loss_fn(params, {"image": x, "example_mask": mask}, jax.random.key(2),
                            model=model, collections=collections)
    length = model.seq_len
    assert length == 16 and model.codebook_size == 16
    np.testing.assert_allclose(m["nll_nats_per_image"], per[:3].mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, per[:3].mean() / length, rtol=1e-5)
    np.testing.assert_allclose(m["bits_per_code"], per[:3].mean() / (length * math.log(2)),
                               rtol=1e-5)
    assert 0.0 <= float(m["next_code_accuracy"]) <= 1.0


def test_the_part_owns_the_gpt_and_not_the_vqvae(tiny):
    model, variables, _ = tiny
    params, _ = split_variables(variables)
    (part,) = prior.parts(model=model)
    owned = check_parts((part,), params)["prior"]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = ["/".join(k.key for k in p) for p, _ in flat]
    assert sorted(owned) == sorted(p for p in paths if p.startswith("params/gpt/"))
    assert any(p.startswith("params/vqvae/") for p in paths)
    assert not any(p.startswith("params/vqvae/") for p in owned)


def test_prior_kwargs_must_match_the_vqvae():
    model = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                           prior=dict(variant="tiny", vocab_size=32))
    with pytest.raises(ValueError, match="prior.vocab_size=32 but the VQ-VAE gives 16"):
        model.init({"params": jax.random.key(0)}, jnp.zeros((1, 8, 8, 1)))
