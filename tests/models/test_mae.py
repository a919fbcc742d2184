"""MAE: the reference's patch order, masking, unshuffling and loss, checked against numpy
transcriptions of facebookresearch/mae models_mae.py; the encoder sees the visible patches
only; the parameter count of MAE ViT-B/16.

The model tests use the tiny variant on 8x8 one-channel images, patch 2 (16 patches)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import mae, protocols, vit

X = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
TINY = dict(variant="tiny", image_size=8, channels=1)


# ----------------------------------------------------------------------- patch order


def reference_patchify(imgs, p):
    """models_mae.py patchify on NCHW images (square, as the reference)."""
    n, c, hh, _ = imgs.shape
    h = w = hh // p
    x = imgs.reshape(n, c, h, p, w, p)
    x = np.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, h * w, p * p * c)


def reference_unpatchify(x, p, c):
    n, length, _ = x.shape
    h = w = int(length ** 0.5)
    x = x.reshape(n, h, w, p, p, c)
    x = np.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, c, h * p, h * p)


def test_patchify_is_the_reference_order_and_round_trips():
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)  # NHWC
    ours = np.asarray(mae.patchify(jnp.asarray(imgs), 4))
    np.testing.assert_array_equal(ours, reference_patchify(imgs.transpose(0, 3, 1, 2), 4))
    # One element by hand: patch (row 1, col 2) is number 1*3 + 2; inside it pixel (r, c),
    # channel ch sits at (r * p + c) * C + ch.
    r, c, ch = 3, 1, 2
    assert ours[0, 1 * 3 + 2, (r * 4 + c) * 3 + ch] == imgs[0, 4 + r, 8 + c, ch]
    back = np.asarray(mae.unpatchify(jnp.asarray(ours), 4, (12, 12, 3)))
    np.testing.assert_array_equal(back, imgs)
    np.testing.assert_array_equal(back.transpose(0, 3, 1, 2),
                                  reference_unpatchify(ours, 4, 3))


def test_patchify_non_square_and_errors():
    imgs = jnp.arange(2 * 4 * 6 * 1, dtype=jnp.float32).reshape(2, 4, 6, 1)
    patches = mae.patchify(imgs, (2, 3))
    assert patches.shape == (2, 4, 6)
    np.testing.assert_array_equal(mae.unpatchify(patches, (2, 3), (4, 6, 1)), imgs)
    with pytest.raises(ValueError, match="not divisible by patch"):
        mae.patchify(imgs, 4)
    with pytest.raises(ValueError, match="do not tile"):
        mae.unpatchify(patches, 2, (4, 6, 1))


# ---------------------------------------------------------------------------- masking


@pytest.mark.parametrize("length,ratio", [(16, 0.75), (49, 0.75), (10, 0.33), (196, 0.9)])
def test_random_masking_keeps_int_l_times_one_minus_r_and_restores(length, ratio):
    b, d = 5, 3
    keep = int(length * (1 - ratio))  # the reference's count (10 * 0.67 -> 6, not 7)
    ids = np.broadcast_to(np.arange(length, dtype=np.float32)[None, :, None], (b, length, d))
    kept, mask, ids_restore = mae.random_masking(jax.random.key(length), jnp.asarray(ids),
                                                 ratio)
    kept, mask, ids_restore = map(np.asarray, (kept, mask, ids_restore))
    assert kept.shape == (b, keep, d) and mask.shape == ids_restore.shape == (b, length)
    kept_ids = kept[..., 0].astype(int)  # each token carries its own index
    for i in range(b):
        np.testing.assert_array_equal(np.sort(ids_restore[i]), np.arange(length))  # a perm
        assert mask[i].sum() == length - keep and set(np.unique(mask[i])) <= {0.0, 1.0}
        np.testing.assert_array_equal(mask[i, kept_ids[i]], 0.0)  # kept <=> mask 0
        # ids_restore inverts the shuffle: shuffled order gathered by it is the original.
        shuffle = np.argsort(ids_restore[i])
        np.testing.assert_array_equal(shuffle[:keep], kept_ids[i])
        np.testing.assert_array_equal(shuffle[ids_restore[i]], np.arange(length))
    assert len({tuple(k) for k in kept_ids}) > 1  # per-example masks


# ------------------------------------------------------------------------------ loss


def reference_loss(imgs_nchw, pred, mask, p, norm_pix_loss):
    """models_mae.py forward_loss, torch.var's default (unbiased) as np.var(ddof=1)."""
    target = reference_patchify(imgs_nchw, p)
    if norm_pix_loss:
        mean = target.mean(-1, keepdims=True)
        var = target.var(-1, keepdims=True, ddof=1)
        target = (target - mean) / (var + 1e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_loss_is_the_reference_and_ignores_visible_patches(norm_pix_loss):
    rng = np.random.default_rng(1)
    imgs = rng.uniform(size=(3, 8, 8, 1)).astype(np.float32)
    pred = rng.normal(size=(3, 16, 4)).astype(np.float32)
    mask = np.zeros((3, 16), np.float32)
    mask[:, rng.permutation(16)[:12]] = 1.0
    loss = lambda pr: float(mae.reconstruction_loss(imgs, jnp.asarray(pr), mask, 2,
                                                    norm_pix_loss=norm_pix_loss))
    want = reference_loss(imgs.transpose(0, 3, 1, 2), pred, mask, 2, norm_pix_loss)
    np.testing.assert_allclose(loss(pred), want, rtol=1e-5)
    visible_changed = pred + 10.0 * (1 - mask)[..., None]
    assert loss(visible_changed) == loss(pred)
    masked_changed = pred + 0.1 * mask[..., None]
    assert abs(loss(masked_changed) - loss(pred)) > 1e-3


def test_norm_pix_variance_is_unbiased_and_it_matters_for_small_patches():
    rng = np.random.default_rng(2)
    imgs = rng.uniform(size=(1, 4, 4, 1)).astype(np.float32)
    mask = np.ones((1, 4), np.float32)
    zero = jnp.zeros((1, 4, 4))
    biased = float(mae.reconstruction_loss(imgs, zero, mask, 2, ddof=0))
    unbiased = float(mae.reconstruction_loss(imgs, zero, mask, 2))
    # Against a zero prediction the loss is E[target^2] = var_ddof0 / (var_ddof + eps):
    # (n - 1) / n = 3/4 for 2x2 patches with the unbiased variance, 1 with the biased one.
    np.testing.assert_allclose(unbiased, 0.75, rtol=1e-3)
    np.testing.assert_allclose(biased, 1.0, rtol=1e-3)


def test_example_mask_drops_padded_examples():
    rng = np.random.default_rng(3)
    imgs = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    pred = rng.normal(size=(2, 16, 4)).astype(np.float32)
    mask = np.ones((2, 16), np.float32)
    em = np.array([1.0, 0.0], np.float32)
    both = mae.reconstruction_loss(imgs, pred, mask, 2, example_mask=em)
    first = mae.reconstruction_loss(imgs[:1], pred[:1], mask[:1], 2)
    np.testing.assert_allclose(both, first, rtol=1e-6)


# ----------------------------------------------------------------------------- model


def test_parameter_count_of_mae_vit_b16():
    model = mae.Model(variant="base")
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 224, 224, 3)), key=k),
                            jax.random.key(0))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    # By hand: ViT-B/16 without head or learned table 85,647,360; decoder embed 393,728,
    # mask token 512, 8 blocks of width 512 25,219,072, norm 1,024, prediction 393,984.
    assert n == 111_655_680
    # The reference's parameters() also counts its two frozen sin-cos tables (197 rows of
    # 768 and of 512), which here are constants: 111,907,840 for mae_vit_base_patch16.
    assert n + 197 * 768 + 197 * 512 == 111_907_840
    assert "pos_embedding" not in shapes["params"]["encoder"]


@pytest.fixture(scope="module")
def tiny():
    model = mae.Model(**TINY)
    variables = jax.jit(lambda k: model.init(k, X, key=k))(jax.random.key(1))
    return model, variables


def test_forward_shapes_protocol_and_init(tiny):
    model, variables = tiny
    assert isinstance(model, protocols.FeatureExtractor) and model.patch == (2, 2)
    pred, aux = jax.jit(lambda v, k: model.apply(v, X, key=k))(variables, jax.random.key(2))
    assert pred.shape == (2, 16, 4) and pred.dtype == jnp.float32
    assert aux["latent"].shape == (2, 1 + 4, 32)  # the class token and int(16 * 0.25) patches
    assert aux["mask"].sum(1).tolist() == [12.0, 12.0]
    p = variables["params"]
    q = np.asarray(p["encoder"]["Transformer"]["encoderblock_0"]
                   ["MultiHeadDotProductAttention_0"]["query"]["kernel"])
    assert np.abs(q).max() <= np.sqrt(6 / (32 + 96))  # MAE's fused-qkv xavier bound
    assert np.any(p["encoder"]["cls"]) and np.any(p["mask_token"])  # N(0, 0.02), not zero


def test_encoder_sees_only_the_visible_patches(tiny):
    model, variables = tiny
    key = jax.random.key(7)
    run = jax.jit(lambda v, x: model.apply(v, x, key=key))
    pred, aux = run(variables, X)
    pixel_mask = mae.unpatchify(jnp.repeat(aux["mask"][..., None], 4, -1), 2, (8, 8, 1))
    noisy = X + 5.0 * pixel_mask * jax.random.normal(jax.random.key(8), X.shape)
    pred2, aux2 = run(variables, noisy)
    np.testing.assert_array_equal(aux2["mask"], aux["mask"])
    np.testing.assert_allclose(aux2["latent"], aux["latent"], atol=1e-6)
    np.testing.assert_allclose(pred2, pred, atol=1e-6)
    visible = X + 0.5 * (1 - pixel_mask)
    assert not np.allclose(run(variables, visible)[1]["latent"], aux["latent"], atol=1e-3)


def test_position_embeddings_come_before_masking(tiny):
    # The encoder adds no position of its own to the kept sequence: permuting the kept tokens
    # permutes the latent. (Adding the table after masking, by sequence index, would not.)
    model, variables = tiny
    perm = np.array([2, 0, 3, 1])

    @jax.jit
    def both(v):
        tokens = model.apply(v, X, method=lambda m, x: m.encoder.embed(x))
        kept, _, _ = mae.random_masking(jax.random.key(3), tokens, 0.75)
        enc = lambda t: model.apply(v, t, method=lambda m, t: m.encoder.encode_tokens(t))
        return enc(kept[:, perm]), enc(kept)

    permuted, plain = both(variables)
    np.testing.assert_allclose(permuted[:, 1:], plain[:, 1:][:, perm], atol=1e-5)


def test_decoder_unshuffles_mask_tokens_with_ids_restore(tiny):
    model, variables = tiny

    @jax.jit
    def run(v):  # the decoder blocks' input, captured inside the one trace
        seen = {}

        def capture(next_fun, args, kwargs, context):
            if isinstance(context.module, vit.Encoder) and context.module.name == "decoder":
                seen["input"] = args[0]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            _, aux = model.apply(v, X, key=jax.random.key(4))
        return aux, seen["input"]

    aux, x = run(variables)
    x = np.asarray(x)  # (B, 1 + L, Dd): unshuffled tokens + the table
    p = variables["params"]
    table = np.concatenate([np.zeros((1, 32)), vit.posemb_sincos_2d(4, 4, 32)])
    tokens = x - table
    embedded = np.asarray(aux["latent"]) @ p["decoder_embed"]["kernel"] + p["decoder_embed"]["bias"]
    mask, restore = np.asarray(aux["mask"]), np.asarray(aux["ids_restore"])
    for b in range(2):
        np.testing.assert_allclose(tokens[b, 0], embedded[b, 0], atol=1e-5)  # class first
        for i in range(16):
            if mask[b, i]:
                np.testing.assert_allclose(tokens[b, 1 + i], p["mask_token"][0, 0], atol=1e-5)
            else:  # patch i was kept as number restore[b, i] of the kept sequence
                np.testing.assert_allclose(tokens[b, 1 + i], embedded[b, 1 + restore[b, i]],
                                           atol=1e-5)


def test_features_load_into_a_vit_for_fine_tuning(tiny):
    model, variables = tiny
    feats = model.apply(variables, X, method=model.features)
    assert feats.shape == (2, 32)
    encoder = vit.Model(**model.encoder_kwargs())
    np.testing.assert_allclose(
        encoder.apply({"params": variables["params"]["encoder"]}, X, method=encoder.features),
        feats, atol=1e-6)


def test_variants_and_errors():
    assert mae.Model(variant="huge").patch == (14, 14)
    assert mae.Model(variant="large", patch_size=8).patch == (8, 8)
    with pytest.raises(ValueError, match="unknown variant 'giant'"):
        mae.Model(variant="giant").patch  # noqa: B018
    with pytest.raises(ValueError, match="image_shape"):
        jax.eval_shape(lambda k: mae.Model(**TINY).init(k, jnp.zeros((1, 8, 8, 3)), key=k),
                       jax.random.key(0))
