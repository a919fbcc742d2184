"""ViT: parameter counts of the standard variants, the sin-cos tables against the two
references' formulas, position-table resizing, pixel-shuffle merging, and each switch (scan,
remat, bf16, attention implementation) leaving the outputs unchanged and tracing once.

Every compile is the tiny variant on 8x8 one-channel images with patch 2 (16 tokens)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_gen.models import protocols, vit

X = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
TINY = dict(variant="tiny/2", image_size=8, num_classes=10, weight_init="mae")


def n_params(tree) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def closed_form(d, depth, mlp, p, c, n, classes):
    """ViT parameters by hand: patch conv, class token, N + 1 position rows, per block two
    LayerNorms, q/k/v/out with biases and the MLP; the final norm; the head."""
    block = 2 * 2 * d + 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return (p * p * c * d + d) + d + (n + 1) * d + depth * block + 2 * d + (d * classes + classes)


# timm's counts for vit_{tiny,small,base,large}_patch16_224 and vit_huge_patch14_224 with a
# 1000-class head; ViT-B/16's 86,567,656 is the one quoted everywhere.
PUBLISHED = {"Ti/16": 5_717_416, "S/16": 22_050_664, "B/16": 86_567_656,
             "L/16": 304_326_632, "H/14": 632_045_800}


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_parameter_counts_of_the_standard_variants(variant):
    model = vit.Model(variant=variant, num_classes=1000, scan=variant != "B/16")
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    cfg = model.config()
    n = (224 // cfg["patch_size"][0]) ** 2
    assert n_params(shapes) == PUBLISHED[variant]
    assert n_params(shapes) == closed_form(cfg["width"], cfg["depth"], cfg["mlp_dim"],
                                           cfg["patch_size"][0], 3, n, 1000)


def test_variants_decode_and_explicit_kwargs_win():
    assert vit.Model(variant="S/8").config() == dict(width=384, depth=12, mlp_dim=1536,
                                                     num_heads=6, patch_size=(8, 8))
    cfg = vit.Model(variant="L/16", width=512, patch_size=14).config()
    assert (cfg["width"], cfg["depth"], cfg["patch_size"]) == (512, 24, (14, 14))
    assert vit.Model().config()["width"] == 768  # no variant: ViT-B/16
    with pytest.raises(ValueError, match="unknown variant 'Q/16'"):
        vit.decode_variant("Q/16")


# ------------------------------------------------------------------------- sin-cos tables


def mae_reference(embed_dim, grid_size):
    """A transcription of MAE's util/pos_embed.py get_2d_sincos_pos_embed (no class row)."""
    def one_d(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    g = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(g, g), axis=0).reshape(2, 1, grid_size, grid_size)
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], 1)


def big_vision_reference(h, w, width, temperature=10_000.0):
    """A transcription of big_vision's models/vit.py posemb_sincos_2d."""
    y, x = np.mgrid[:h, :w]
    omega = np.arange(width // 4) / (width // 4 - 1)
    omega = 1.0 / temperature ** omega
    y = np.einsum("m,d->md", y.flatten(), omega)
    x = np.einsum("m,d->md", x.flatten(), omega)
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)


@pytest.mark.parametrize("layout", vit.SINCOS_LAYOUTS)
def test_sincos_table_matches_the_formula(layout):
    h, w, d = 3, 5, 16
    k = d // 4
    table = vit.posemb_sincos_2d(h, w, d, layout=layout)
    assert table.shape == (h * w, d) and table.dtype == np.float32
    denom = k if layout == "mae" else k - 1
    for i in range(h):
        for j in range(w):
            om = 10_000.0 ** -(np.arange(k) / denom)
            want = np.concatenate([np.sin(j * om), np.cos(j * om), np.sin(i * om),
                                   np.cos(i * om)])
            np.testing.assert_allclose(table[i * w + j], want, atol=1e-6)


def test_sincos_tables_are_the_references_and_differ():
    np.testing.assert_allclose(vit.posemb_sincos_2d(4, 4, 32), mae_reference(32, 4), atol=1e-6)
    np.testing.assert_allclose(vit.posemb_sincos_2d(3, 5, 32, layout="big_vision"),
                               big_vision_reference(3, 5, 32), atol=1e-6)
    gap = np.abs(vit.posemb_sincos_2d(4, 4, 32) - vit.posemb_sincos_2d(4, 4, 32,
                                                                        layout="big_vision"))
    assert gap.max() > 0.1  # the layouts are not interchangeable


# ------------------------------------------------------------------ position-table resize


@pytest.mark.parametrize("method", ["cubic", "linear"])
@pytest.mark.parametrize("prefix", [0, 1])
def test_posemb_resize_is_the_identity_at_the_same_grid(method, prefix):
    table = np.random.default_rng(0).normal(size=(1, prefix + 16, 8)).astype(np.float32)
    out = vit.resize_posemb(table, (4, 4), num_prefix=prefix, method=method)
    np.testing.assert_allclose(np.asarray(out), table, atol=1e-6)


def test_posemb_resize_samples_at_half_pixel_centres():
    # A table linear in (row, column) is reproduced by linear interpolation at the new grid's
    # centres, mapped back as old = (new + 0.5) * old_size / new_size - 0.5 (interior only).
    r, c = np.mgrid[:4, :4].astype(np.float32)
    table = np.stack([r, c, 2 * r - c], -1).reshape(1, 16, 3)
    table = np.concatenate([np.full((1, 1, 3), 7.0, np.float32), table], 1)  # a class row
    out = np.asarray(vit.resize_posemb(table, (8, 8), num_prefix=1, method="linear"))
    assert out.shape == (1, 65, 3)
    np.testing.assert_array_equal(out[0, 0], [7.0, 7.0, 7.0])
    grid = out[0, 1:].reshape(8, 8, 3)
    nr, nc = np.mgrid[:8, :8].astype(np.float32)
    old_r, old_c = (nr + 0.5) / 2 - 0.5, (nc + 0.5) / 2 - 0.5
    want = np.stack([old_r, old_c, 2 * old_r - old_c], -1)
    np.testing.assert_allclose(grid[1:7, 1:7], want[1:7, 1:7], atol=1e-5)


def test_resize_loaded_hook():
    table = np.random.default_rng(1).normal(size=(1, 1 + 16, 8)).astype(np.float32)
    out = vit.resize_loaded("params/pos_embedding", table, (1, 1 + 36, 8))
    assert out.shape == (1, 37, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], table[0, 0])  # the class row kept
    assert vit.resize_loaded("params/pos_embedding", table[:, 1:], (1, 64, 8)).shape == (1, 64, 8)
    assert vit.resize_loaded("params/head/kernel", table, (1, 37, 8)) is None
    assert vit.resize_loaded("params/pos_embedding", table, (1, 37, 4)) is None  # width


# ----------------------------------------------------------------------- token reduction


def test_pixel_shuffle_merge_against_numpy():
    b, h, w, d = 2, 4, 6, 3
    tokens = np.arange(b * h * w * d, dtype=np.float32).reshape(b, h * w, d)
    out = np.asarray(vit.pixel_shuffle_merge(jnp.asarray(tokens), (h, w), 2))
    assert out.shape == (b, (h // 2) * (w // 2), 4 * d)
    grid = tokens.reshape(b, h, w, d)
    for i in range(h // 2):
        for j in range(w // 2):
            want = np.concatenate([grid[:, 2 * i + di, 2 * j + dj] for di in (0, 1)
                                   for dj in (0, 1)], -1)
            np.testing.assert_array_equal(out[:, i * (w // 2) + j], want)
    with pytest.raises(ValueError, match="must divide by 2"):
        vit.pixel_shuffle_merge(jnp.asarray(tokens), (3, 8), 2)


# ------------------------------------------------------------------------- initializers


def test_initializers_fused_qkv_bound_and_flat_patch_embedding():
    d = 256
    key = jax.random.key(3)
    fused = np.asarray(vit.initializers("mae")["qkv"](key, (d, d)))
    split = np.asarray(vit.initializers("vit")["qkv"](key, (d, d)))
    b_fused, b_split = math.sqrt(6 / (d + 3 * d)), math.sqrt(6 / (2 * d))
    assert 0.99 * b_fused < np.abs(fused).max() <= b_fused  # PyTorch's (D, 3D) fan
    assert 0.99 * b_split < np.abs(split).max() <= b_split  # Flax's (D, D) fan
    # MAE's patch embedding is xavier on the (p*p*C, D) linear: bound sqrt(6 / (p*p*C + D)).
    emb = np.asarray(vit.initializers("mae")["embed"](key, (4, 4, 3, 64)))
    bound = math.sqrt(6 / (48 + 64))
    assert 0.95 * bound < np.abs(emb).max() <= bound
    with pytest.raises(ValueError, match="init must be one of"):
        vit.initializers("he")


# ------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def tiny():
    model = vit.Model(**TINY)
    variables = jax.jit(model.init)(jax.random.key(1), X)
    return model, variables


def test_entry_points_shapes_and_protocol(tiny):
    model, variables = tiny
    assert isinstance(model, protocols.FeatureExtractor)
    logits, aux = model.apply(variables, X)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert aux["tokens"].shape == (2, 17, 32) and aux["patch_tokens"].shape == (2, 16, 32)
    feats = model.apply(variables, X, method=model.features)
    np.testing.assert_allclose(feats, aux["pre_logits"], atol=1e-6)
    np.testing.assert_allclose(feats, aux["tokens"][:, 0], atol=1e-6)  # pool="cls"
    merged = model.apply(variables, X, merge=2, method=model.tokens)
    assert merged.shape == (2, 4, 128)
    np.testing.assert_allclose(merged, vit.pixel_shuffle_merge(aux["patch_tokens"], (4, 4)),
                               atol=1e-6)
    p = variables["params"]
    assert p["pos_embedding"].shape == (1, 17, 32) and p["cls"].shape == (1, 1, 32)


def test_gap_pooling_leaves_the_class_token_out(tiny):
    _, variables = tiny
    gap = vit.Model(**TINY, pool="gap", class_token=True)  # the cls model's parameters
    feats, aux = jax.jit(lambda v: gap.apply(v, X, method=lambda m, x: (m.features(x),
                                                                        m(x)[1])))(variables)
    np.testing.assert_allclose(feats, aux["patch_tokens"].mean(1), atol=1e-6)


def test_map_pooling_has_a_probe_and_no_class_token():
    mapped = vit.Model(**TINY, pool="map")
    shapes = jax.eval_shape(mapped.init, jax.random.key(0), X)["params"]
    assert set(shapes) == {"MAPHead_0", "Transformer", "embedding", "head", "pos_embedding"}
    assert shapes["pos_embedding"].shape == (1, 16, 32)  # no class row
    assert shapes["MAPHead_0"]["probe"].shape == (1, 1, 32)
    out = jax.jit(lambda k: mapped.apply(mapped.init(k, X), X)[0])(jax.random.key(0))
    assert out.shape == (2, 10) and np.all(np.isfinite(out))


def test_google_init_zeroes_class_token_and_head():
    model = vit.Model(variant="tiny/2", image_size=8, num_classes=10)
    shapes = jax.eval_shape(model.init, jax.random.key(0), X)
    assert set(shapes["params"]) == {"Transformer", "cls", "embedding", "head", "pos_embedding"}
    variables = jax.jit(model.init)(jax.random.key(0), X)
    p = variables["params"]
    assert not np.any(p["cls"]) and not np.any(p["head"]["kernel"])
    assert np.abs(np.std(p["pos_embedding"]) - 1 / math.sqrt(32)) < 0.03


def test_scan_is_the_unrolled_model_with_stacked_parameters(tiny):
    model, variables = tiny
    stacked = vit.stack_blocks(variables["params"])
    assert stacked["Transformer"]["encoderblock"]["LayerNorm_0"]["scale"].shape == (2, 32)
    back = vit.unstack_blocks(stacked)
    jax.tree.map(np.testing.assert_array_equal, back, dict(variables["params"]))
    scanned = vit.Model(**TINY, scan=True, drop_path=0.2)  # inactive in eval mode
    want, _ = model.apply(variables, X)
    (got, _), traces = _traced_once(scanned.apply, {"params": stacked}, X)
    assert traces == 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with_remat = vit.Model(**TINY, scan=True, remat="nothing_saveable")  # remat inside scan
    got, _ = jax.jit(with_remat.apply)({"params": stacked}, X)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # In training the per-block drop-path rates are a scanned input.
    train = jax.jit(lambda p, k: scanned.apply(p, X, train=True, rngs={"dropout": k})[0])
    a, b = train({"params": stacked}, jax.random.key(0)), train({"params": stacked},
                                                               jax.random.key(1))
    assert np.all(np.isfinite(a)) and not np.allclose(a, b)


def _traced_once(fn, *args):
    """fn jitted and called twice with new inputs of the same shapes: (output, traces)."""
    count = [0]

    def counted(*a):
        count[0] += 1
        return fn(*a)

    jitted = jax.jit(counted)
    jitted(*args)
    out = jitted(*[jax.tree.map(lambda v: v * 1.0 if v.dtype.kind == "f" else v, a)
                   for a in args])
    return out, count[0]


# Each switch: its kwargs and the tolerance on the features, relative to their largest
# magnitude. bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 2e-3 per op); through two
# blocks the measured error is 6e-3 of the features' scale (seed 0): the tolerance is 3e-2.
SWITCHES = {
    "remat_nothing_saveable": (dict(remat="nothing_saveable"), 1e-6),
    "remat_full": (dict(remat="full"), 1e-6),
    "attention_xla": (dict(attention_impl="xla"), 1e-6),
    "bfloat16": (dict(dtype="bfloat16"), 3e-2),
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_switch_keeps_the_outputs_and_traces_once(tiny, name):
    model, variables = tiny
    kwargs, tol = SWITCHES[name]
    other = vit.Model(**TINY, **kwargs)
    want = model.apply(variables, X, method=model.features)
    got, traces = _traced_once(lambda p, x: other.apply(p, x, method=other.features),
                               variables, X)
    assert traces == 1 and got.dtype == jnp.float32
    err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    assert err <= tol, (name, err)


@pytest.mark.slow
@pytest.mark.parametrize("remat", ["nothing_saveable", "dots_saveable"])
def test_remat_leaves_the_gradient_unchanged(tiny, remat):
    model, variables = tiny
    other = vit.Model(**TINY, remat=remat)
    loss = lambda m: jax.jit(jax.grad(
        lambda p: jnp.mean(m.apply(p, X, method=m.features) ** 2)))(variables)
    want, got = loss(model), loss(other)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


def test_bfloat16_computes_matmuls_in_bfloat16(tiny):
    _, variables = tiny
    model = vit.Model(**TINY, dtype="bfloat16")
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply(p, x))(variables, X)
    dots = [e.invars[0].aval.dtype for e in _all_eqns(jaxpr.jaxpr)
            if e.primitive.name in ("dot_general", "conv_general_dilated")]
    # per block q, k, v, out, two attention products and two MLP matmuls; the patch conv.
    assert dots.count(jnp.bfloat16) >= 8 * 2 + 1
    assert dots.count(jnp.float32) == 1  # the head: logits from float32 weights
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))


def _all_eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for p in e.params.values():
            for sub in (p if isinstance(p, tuple | list) else [p]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    yield from _all_eqns(getattr(inner, "jaxpr", inner))


def test_training_switches_patch_dropout_and_drop_path(tiny):
    _, variables = tiny
    model = vit.Model(**TINY, patch_dropout=0.5, drop_path=0.5, dropout=0.1)
    run = jax.jit(lambda p, x, k, train: model.apply(p, x, train=train, rngs={"dropout": k}),
                  static_argnums=3)
    _, aux = run(variables, X, jax.random.key(0), True)
    assert aux["tokens"].shape == (2, 1 + 8, 32)  # int(16 * 0.5) patches kept + the class
    _, aux_eval = run(variables, X, jax.random.key(0), False)
    assert aux_eval["tokens"].shape == (2, 17, 32)
    plain, _ = vit.Model(**TINY).apply(variables, X)
    np.testing.assert_allclose(run(variables, X, jax.random.key(5), False)[0], plain, atol=1e-6)
    a = run(variables, X, jax.random.key(1), True)[1]["pre_logits"]
    b = run(variables, X, jax.random.key(2), True)[1]["pre_logits"]
    assert not np.allclose(a, b)  # the rng stream reaches the switches


def test_learned_table_is_interpolated_for_another_resolution(tiny):
    model, variables = tiny
    big = jax.random.uniform(jax.random.key(4), (1, 12, 12, 1))
    _, aux = jax.jit(model.apply)(variables, big)
    assert aux["patch_tokens"].shape == (1, 36, 32)


def test_save_load_round_trip(tiny, tmp_path):
    _, variables = tiny
    path = str(tmp_path / "vit.safetensors")
    vit.save(path, variables)
    back = vit.load(path)
    jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(dict(variables)))


def test_configuration_errors_before_compiling():
    x = jnp.zeros((1, 8, 8, 1))
    bad = [(dict(pool="cls", class_token=False), "pool='cls' needs class_token"),
           (dict(pool="mean"), "pool must be one of"),
           (dict(remat="everything"), "jax.checkpoint_policies"),
           (dict(num_heads=3), "divisible by num_heads"),
           (dict(patch_size=16), "smaller than the patch")]
    for kwargs, msg in bad:
        with pytest.raises(ValueError, match=msg):
            jax.eval_shape(vit.Model(**{**TINY, **kwargs}).init, jax.random.key(0), x)
