"""The VQGAN model (ssl_gen.models.vqgan): its shapes, parameter subtrees and entry points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import vqgan


def _model(**kw):
    return vqgan.Model(**{"variant": "tiny", "image_shape": (16, 16, 3), **kw})


@pytest.mark.parametrize("size,layers,want", [(256, 3, 30), (32, 2, 6), (32, 3, 2),
                                              (16, 2, 2)])
def test_patchgan_gives_one_logit_per_patch_on_the_pix2pix_grid(size, layers, want):
    """pix2pix's 70x70 PatchGAN (3 layers) maps 256 px to the well-known 30x30 logits; the
    model's output has the grid `patch_grid` computes."""
    assert vqgan.patch_grid(size, layers) == want
    d = vqgan.PatchDiscriminator(ch=4, num_layers=layers, groups=2)
    x = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(d.init, jax.random.key(0), x)
    out = jax.eval_shape(d.apply, variables, x)
    assert out.shape == (2, want, want)


def test_init_makes_the_generator_and_discriminator_subtrees_and_the_last_layer():
    m = _model()
    x = jnp.zeros((2, 16, 16, 3))
    v = m.init(jax.random.key(0), x)
    assert set(v["params"]) == {"generator", "discriminator"}
    assert set(v["params"]["generator"]) == {"encoder", "decoder"}  # EMA: no vq params
    assert set(v["vq_stats"]) == {"generator"}
    kernel = v
    for k in vqgan.LAST_LAYER:
        kernel = kernel[k]
    assert kernel.shape == (3, 3, 8, 3)  # 3x3 conv from ch * ch_mult[0] to the RGB channels
    for part in ("encoder", "decoder"):  # one attention block each, in the mid stack
        assert [k for k in v["params"]["generator"][part] if k.startswith("AttnBlock")] == \
            ["AttnBlock_0"]


def test_entry_points_have_the_vqvae_shapes_and_indices_round_trip():
    m = _model(quantizer="vq", num_codes=16)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3)) * 255
    v = m.init(jax.random.key(0), x)
    assert m.latent_shape() == (8, 8) and m.codebook_size == 16
    x_hat, aux = m.apply(v, x)
    assert x_hat.shape == x.shape and aux["indices"].shape == (2, 8, 8)
    np.testing.assert_allclose(aux["target"], x / 255, rtol=1e-6)
    z_e = m.apply(v, x, method=m.encode)
    z_q, _ = m.apply(v, z_e, method=m.quantize)
    np.testing.assert_allclose(m.apply(v, aux["indices"], method=m.decode_indices),
                               m.apply(v, z_q, method=m.decode), atol=1e-5)
    assert m.apply(v, aux["target"], method=m.discriminate).shape == (2, 2, 2)


def test_attention_mixes_positions_at_the_lowest_resolution():
    """Changing one input pixel moves the far corner of the 32x32 latent grid of a 64x64
    image: the tiny variant's convs reach ~37 pixels (conv_in 3, residual blocks +4 and +8,
    the downsample +2, mid blocks +16, conv_out +4), so only the attention block gets
    there."""
    x = jax.random.uniform(jax.random.key(2), (1, 64, 64, 3)) * 255
    m = _model(image_shape=(64, 64, 3))
    v = m.init(jax.random.key(0), x)
    z = m.apply(v, x, method=m.encode)
    z2 = m.apply(v, x.at[0, 0, 0, 0].add(50.0), method=m.encode)
    moved = np.abs(np.asarray(z2 - z)).max(-1)[0]  # (32, 32)
    assert moved.shape == (32, 32) and moved[-1, -1] > 1e-6


@pytest.mark.parametrize("kw,match", [
    (dict(image_shape=(17, 17, 3)), "not divisible"),
    (dict(disc_norm="batch"), "disc_norm"),
    (dict(quantizer="lfq"), "quantizer must be one of"),
    (dict(quantizer="vq", restart=True), "need quantizer='ema'"),
    (dict(data_range=(1.0, 0.0)), "data_range"),
    (dict(image_shape=(4, 4, 3), disc_layers=3), "disc_layers"),
])
def test_bad_settings_are_one_line_value_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        _model(**kw).init(jax.random.key(0), jnp.zeros((1, *_model(**kw).image_shape)))


def test_the_stage2_prior_runs_on_a_vqgan_stage1_loaded_under_vqvae():
    """`vq_prior.Model(stage1_model="vqgan")`: every stage-1 leaf it creates has its
    counterpart in a VQGAN's variables (what `init_from` mapping {"vqvae": ""} loads; the
    discriminator is left behind), and with those loaded its codes are the VQGAN's own
    indices and its samples decode to images."""
    from flax import traverse_util

    from ssl_gen.models import vq_prior

    kw = dict(variant="tiny", image_shape=(16, 16, 3))
    stage1 = vqgan.Model(**kw)
    x = jax.random.uniform(jax.random.key(3), (2, 16, 16, 3)) * 255
    v1 = stage1.init(jax.random.key(0), x)
    prior = vq_prior.Model(stage1=kw, stage1_model="vqgan", prior=dict(variant="tiny"))
    v2 = prior.init(jax.random.key(1), x)
    loaded = {}
    for coll, tree in v2.items():
        flat = traverse_util.flatten_dict(tree)
        src = traverse_util.flatten_dict(v1[coll])
        for path, leaf in flat.items():
            if path[0] == "vqvae":
                assert src[path[1:]].shape == leaf.shape, path
                flat[path] = src[path[1:]]
        loaded[coll] = traverse_util.unflatten_dict(flat)
    assert not any(p[1] == "discriminator"
                   for p in traverse_util.flatten_dict(v2["params"]) if p[0] == "vqvae")
    codes = prior.apply(loaded, x, method=prior.codes)
    want = stage1.apply(v1, x)[1]["indices"].reshape(2, -1)
    np.testing.assert_array_equal(codes, want)
    assert prior.seq_len == 64 and prior.codebook_size == 16
    samples = prior.apply(loaded, jax.random.key(2), 2, method=prior.sample)
    assert samples.shape == (2, 16, 16, 3) and np.all(np.isfinite(samples))
    with pytest.raises(ValueError, match="stage1_model must be one of"):
        vq_prior.Model(stage1=kw, stage1_model="vqgn").init(jax.random.key(1), x)


def test_an_explicit_field_wins_over_the_variant_even_at_another_variants_value():
    """A value equal to what another variant (or the no-variant default) would give is
    still explicit: `variant="tiny", ch_mult=(1, 2, 2)` is f = 4, not tiny's f = 2 (with
    class defaults as the "unset" marker, the tiny table silently won)."""
    from ssl_gen.models import vqvae

    assert vqgan.Model(variant="tiny").latent_shape() == (16, 16)  # tiny: ch_mult (1, 2)
    assert vqgan.Model(variant="tiny", ch_mult=(1, 2, 2)).latent_shape() == (8, 8)
    assert vqgan.Model(variant="tiny", num_codes=512).codebook_size == 512
    assert vqgan.Model().codebook_size == 512 and vqgan.Model().latent_shape() == (8, 8)
    assert vqvae.Model(variant="tiny", num_codes=256).codebook_size == 256
    assert vqvae.Model(variant="tiny").codebook_size == 16
    assert vqvae.Model().codebook_size == 256 and vqvae.Model().latent_shape() == (4, 4)
    assert vqvae.Model(variant="oord17", num_downsamples=1).latent_shape() == (4, 4)
