"""The model protocols: the VAE and DVAE satisfy the ones their evaluations rely on, and
the entry points return the shapes the protocols state."""

import jax
import jax.numpy as jnp
import pytest

from ssl_gen.models import contrastive, cpc, cpc_grid, dvae, gan, mae, protocols, vae, vit

P = protocols
X = jnp.zeros((2, 8, 8, 1), jnp.uint8)

# model -> the protocols it must satisfy, and those it must not (so the checks can fail).
CASES = {
    "vae": (lambda: vae.Model(variant="tiny"),
            {P.LatentModel, P.ImageModel},
            {P.DiscreteLatents, P.PosteriorMode, P.PriorSampler, P.FeatureExtractor, P.Sampler}),
    "dvae": (lambda: dvae.Model(variant="tiny"),
             {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PosteriorMode, P.PriorSampler},
             {P.FeatureExtractor, P.Sampler}),
    "gan": (lambda: gan.Model(data_shape=(8, 8, 1), variant="tiny"),
            {P.Sampler},
            {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler,
             P.FeatureExtractor}),
    "vit": (lambda: vit.Model(variant="tiny/2", image_size=8),
            {P.FeatureExtractor},
            {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler, P.Sampler}),
    "mae": (lambda: mae.Model(variant="tiny", image_size=8, channels=1),
            {P.FeatureExtractor},
            {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler, P.Sampler}),
    "cpc": (lambda: cpc.Model(variant="mnist1d"),
            {P.FeatureExtractor},
            {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler, P.Sampler}),
    "cpc_grid": (lambda: cpc_grid.Model(variant="tiny"),
                 {P.FeatureExtractor},
                 {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler, P.Sampler}),
    "contrastive": (lambda: contrastive.Model(),
                    {P.FeatureExtractor},
                    {P.LatentModel, P.ImageModel, P.DiscreteLatents, P.PriorSampler,
                     P.Sampler}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_models_satisfy_their_protocols(name):
    make, yes, no = CASES[name]
    model = make()
    for proto in yes:
        assert isinstance(model, proto), (name, proto.__name__)
    for proto in no:
        assert not isinstance(model, proto), (name, proto.__name__)


def test_a_model_missing_a_member_fails_the_check():
    class EncoderOnly:
        def encode(self, x):
            return x

    assert not isinstance(EncoderOnly(), P.LatentModel)
    assert not isinstance(EncoderOnly(), P.ImageModel)


def test_a_sampler_samples_in_data_space():
    model = CASES["gan"][0]()
    variables = model.init(jax.random.key(0), X)
    x = model.apply(variables, jax.random.key(1), 3, method=model.sample)
    assert x.shape == (3, 8, 8, 1)


@pytest.mark.parametrize("name", ["dvae", "vae"])
def test_entry_points_have_the_stated_shapes(name):
    model = CASES[name][0]()
    variables = model.init({"params": jax.random.key(0), "sample": jax.random.key(1)}, X)
    call = lambda m, *a: model.apply(variables, *a, method=m)
    q = call(model.encode, X)
    if isinstance(model, P.DiscreteLatents):
        assert q.shape == (2, *model.latent_shape)
        z = call(model.posterior_mode, X)
        assert z.shape == (2, *model.latent_shape)
        assert call(model.sample_prior, jax.random.key(2), 3).shape == (3, *model.latent_shape)
    else:
        loc, scale = q
        assert loc.shape == scale.shape == (2, model.latent_size)
        z = loc
    assert call(model.log_likelihood, z, X).shape == (2,)
    mean = call(model.decode_mean, z)
    assert mean.shape == (2, 8, 8, 1)
    assert bool(jnp.all((mean >= 0) & (mean <= 1)))
