"""The masked-code objective (MaskGIT Eq. 1): the cross entropy counts masked positions only
(changing the logits at unmasked ones changes nothing) and is the NumPy log-softmax sum
there; the loss is the mean over the masked codes of real examples with the mask the rng
gives; its one part owns the transformer and not the VQ-VAE; a causal prior is refused;
the bidirectional prior's samples are codes (no [MASK] left)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import maskgit, vq_prior
from ssl_gen.objectives import masked_prior
from ssl_gen.train.step import check_parts, split_variables


def _log_softmax(a):
    a = a - a.max(-1, keepdims=True)
    return a - np.log(np.exp(a).sum(-1, keepdims=True))


def _ce(logits, codes):
    return -np.take_along_axis(_log_softmax(np.asarray(logits, np.float64)),
                               np.asarray(codes)[..., None], -1)[..., 0]


def test_masked_cross_entropy_ignores_unmasked_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, 5)).astype(np.float32)
    codes = rng.integers(0, 5, size=(3, 6))
    masked = rng.random((3, 6)) < 0.5
    got = masked_prior.masked_cross_entropy(jnp.asarray(logits), jnp.asarray(codes),
                                            jnp.asarray(masked))
    np.testing.assert_allclose(got, np.where(masked, _ce(logits, codes), 0).sum(-1),
                               rtol=1e-5)
    scrambled = np.where(masked[..., None], logits, 100 * rng.normal(size=logits.shape))
    again = masked_prior.masked_cross_entropy(jnp.asarray(scrambled, jnp.float32),
                                              jnp.asarray(codes), jnp.asarray(masked))
    np.testing.assert_allclose(again, got, rtol=1e-6)
    # ... and the masked ones do count (so the check above can fail).
    moved = masked_prior.masked_cross_entropy(jnp.asarray(logits + 3.0 * masked[..., None]
                                                          * rng.normal(size=logits.shape)),
                                              jnp.asarray(codes), jnp.asarray(masked))
    assert np.abs(np.asarray(moved - got)).max() > 1e-3


@pytest.fixture(scope="module")
def tiny():
    model = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                           prior=dict(variant="tiny", bidirectional=True), num_steps=4)
    x = jax.random.randint(jax.random.key(0), (4, 8, 8, 1), 0, 17).astype(jnp.float32)
    variables = model.init({"params": jax.random.key(1)}, x)
    return model, variables, x


def test_loss_is_the_mean_over_masked_codes_of_real_examples(tiny):
    model, variables, x = tiny
    params, collections = split_variables(variables)
    rng = jax.random.key(2)
    example_mask = jnp.asarray([1.0, 1.0, 1.0, 0.0])
    loss, m = masked_prior.loss_fn(params, {"image": x, "example_mask": example_mask}, rng,
                                   model=model, collections=collections)
    # The same mask by hand: the loss splits rng into (mask key, dropout key).
    codes = model.apply(variables, x, method=model.codes)
    masked = np.asarray(maskgit.training_mask(jax.random.split(rng)[0], 4, 16))
    logits = model.apply(variables, jnp.where(masked, model.mask_id, codes),
                         method=model.logits)  # dropout is 0 in "tiny"
    w = masked * np.asarray(example_mask)[:, None]
    want = (_ce(logits, codes) * w).sum() / w.sum()
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(m["masked_bits_per_code"], want / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(m["mask_fraction"], w.sum() / 48, rtol=1e-6)
    assert model.mask_id == 16 and 0.0 <= float(m["masked_accuracy"]) <= 1.0


def test_the_part_owns_the_transformer_and_a_causal_prior_is_refused(tiny):
    model, variables, _ = tiny
    params, _ = split_variables(variables)
    (part,) = masked_prior.parts(model=model)
    owned = check_parts((part,), params)["prior"]
    paths = ["/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(
        params)[0]]
    assert sorted(owned) == sorted(p for p in paths if p.startswith("params/gpt/"))
    causal = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                            prior=dict(variant="tiny"))
    with pytest.raises(ValueError, match="must be a bidirectional prior"):
        masked_prior.parts(model=causal)


def test_bidirectional_prior_samples_are_codes(tiny):
    model, variables, _ = tiny
    codes = model.apply(variables, jax.random.key(3), 6, method=model.sample_codes)
    assert codes.shape == (6, 16)
    assert np.all((np.asarray(codes) >= 0) & (np.asarray(codes) < 16))
    images = model.apply(variables, jax.random.key(3), 2, method=model.sample)
    assert images.shape == (2, 8, 8, 1)
    bad = vq_prior.Model(stage1=dict(variant="tiny", num_codes=16),
                         prior=dict(variant="tiny", bidirectional=True), num_steps=17)
    with pytest.raises(ValueError, match="num_steps must be an int in"):
        bad.init({"params": jax.random.key(0)}, jnp.zeros((1, 8, 8, 1)))
