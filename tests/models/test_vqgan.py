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
