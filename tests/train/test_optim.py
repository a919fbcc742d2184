"""ssl_gen.train.optim: groups, frozen leaves, decay masks, layer-wise decay, LARS/LAMB,
schedules, accumulation and config errors, on tiny pytrees (no model is built)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from ssl_gen.train import optim


def tree():
    """A Flax-like parameter tree: '/'-joined paths such as 'params/enc/Dense_0/kernel'."""
    k = iter(jax.random.split(jax.random.key(0), 16))
    n = lambda *s: jax.random.normal(next(k), s)
    return {"params": {
        "enc": {"Dense_0": {"kernel": n(3, 4), "bias": n(4)}, "LayerNorm_0": {"scale": n(4)}},
        "attn": {"bias": n(2, 4), "kernel": n(4, 2, 4)},  # a 2-D bias (DenseGeneral)
        "head": {"kernel": n(4, 2), "bias": n(2)},
        "temp": n(),  # a scalar, named neither bias nor scale
    }}


def run(cfg, params, grads_seq, total_steps=100):
    tx = optim.make_optimizer(cfg, total_steps)
    state = tx.init(params)
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def grads_like(params, seed, scale=1.0):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return treedef.unflatten([scale * jax.random.normal(k, x.shape) for k, x in
                              zip(keys, leaves, strict=True)])


def first_update(cfg, params, grads):
    tx = optim.make_optimizer(cfg, 100)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


# -- existing configs: the same transformation as before the new options existed ------------

def reference(c, total_steps):
    """The optimizer exactly as optim.make_optimizer built it before groups/masks/etc."""
    c = {**dict(name="adam", learning_rate=1e-3, schedule="constant", warmup_steps=0,
                end_lr_factor=0.0, weight_decay=0.0, b1=0.9, b2=0.999, eps=1e-8, momentum=0.9,
                nesterov=False, grad_clip_norm=None), **c}
    lr_, warm = c["learning_rate"], c["warmup_steps"]
    lr = {"constant": lambda: optax.constant_schedule(lr_),
          "warmup_constant": lambda: optax.join_schedules(
              [optax.linear_schedule(0.0, lr_, max(warm, 1)), optax.constant_schedule(lr_)],
              [warm]),
          "cosine": lambda: optax.cosine_decay_schedule(lr_, max(total_steps, 1),
                                                        alpha=c["end_lr_factor"]),
          "warmup_cosine": lambda: optax.warmup_cosine_decay_schedule(
              0.0, lr_, warm, max(total_steps, warm + 1), end_value=lr_ * c["end_lr_factor"]),
          }[c["schedule"]]()
    if c["name"] == "adam":
        tx = optax.adam(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"])
    elif c["name"] == "adamw":
        tx = optax.adamw(lr, b1=c["b1"], b2=c["b2"], eps=c["eps"], weight_decay=c["weight_decay"])
    else:
        tx = optax.sgd(lr, momentum=c["momentum"] or None, nesterov=c["nesterov"])
        if c["weight_decay"]:
            tx = optax.chain(optax.add_decayed_weights(c["weight_decay"]), tx)
    if c["grad_clip_norm"]:
        tx = optax.chain(optax.clip_by_global_norm(c["grad_clip_norm"]), tx)
    return tx


@pytest.mark.parametrize("c", [
    dict(),
    dict(name="adamw", weight_decay=1e-2, schedule="warmup_cosine", warmup_steps=3,
         end_lr_factor=0.1, grad_clip_norm=1.0),
    dict(name="sgd", weight_decay=1e-3, momentum=0.9, nesterov=True, schedule="cosine"),
    dict(name="sgd", momentum=0.0, schedule="warmup_constant", warmup_steps=2),
    dict(name="adam", learning_rate=3e-3, b1=0.5, eps=1e-6, grad_clip_norm=0.5),
])
def test_existing_configs_build_the_same_transformation(c):
    params = tree()
    grads = [grads_like(params, s) for s in range(6)]
    ours, ours_state = run(ml_collections.ConfigDict(c), params, grads, total_steps=10)
    tx = reference(c, 10)
    state, ref = tx.init(params), params
    for g in grads:
        u, state = tx.update(g, state, ref)
        ref = optax.apply_updates(ref, u)
    assert jax.tree.structure(ours_state) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# -- parameter groups and frozen leaves --------------------------------------------------

@pytest.mark.parametrize("clip", [None, 1.0])
def test_frozen_group_is_unchanged_and_has_no_optimizer_state(clip):
    params = tree()
    cfg = dict(name="adam", learning_rate=0.1, grad_clip_norm=clip,
               groups=[dict(pattern=r"^params/enc/", frozen=True)])
    grads = [grads_like(params, s) for s in range(5)]
    new, state = run(cfg, params, grads)
    for path in ("Dense_0/kernel", "Dense_0/bias", "LayerNorm_0/scale"):
        a, b = new["params"]["enc"], params["params"]["enc"]
        for key in path.split("/"):
            a, b = a[key], b[key]
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise
    assert not np.allclose(new["params"]["head"]["kernel"], params["params"]["head"]["kernel"])
    trainable = sum(x.size for sub in ("attn", "head")
                    for x in jax.tree.leaves(params["params"][sub]))
    in_state = sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0)
    assert in_state == 2 * trainable  # Adam's mu and nu, for the trainable leaves only
    frozen_shapes = {x.shape for x in jax.tree.leaves(params["params"]["enc"])}
    assert not frozen_shapes & {x.shape for x in jax.tree.leaves(state)}


def test_frozen_gradients_do_not_count_towards_the_clipping_norm():
    params = tree()
    grads = grads_like(params, 1)
    loud = jax.tree.map(lambda g: g * 1e6, grads)
    loud["params"]["head"] = grads["params"]["head"]
    loud["params"]["attn"] = grads["params"]["attn"]
    loud["params"]["temp"] = grads["params"]["temp"]
    cfg = dict(name="sgd", momentum=0.0, learning_rate=1.0, grad_clip_norm=1.0,
               groups=[dict(pattern=r"enc", frozen=True)])
    a = first_update(cfg, params, loud)
    b = first_update(cfg, params, grads)
    np.testing.assert_allclose(a["params"]["head"]["kernel"], b["params"]["head"]["kernel"],
                               rtol=1e-6)
    assert np.all(np.asarray(a["params"]["enc"]["Dense_0"]["kernel"]) == 0)


def test_groups_get_their_own_learning_rate_first_match_wins():
    params = tree()
    grads = grads_like(params, 2)
    cfg = ml_collections.ConfigDict(dict(
        name="sgd", momentum=0.0, learning_rate=0.01,
        groups=[dict(pattern=r"head/kernel", learning_rate=0.5),
                dict(pattern=r"head", learning_rate=0.25)]))
    u = first_update(cfg, params, grads)
    for (sub, leaf), lr in [(("head", "kernel"), 0.5), (("head", "bias"), 0.25),
                            (("attn", "kernel"), 0.01), (("enc", "Dense_0"), 0.01)]:
        got, g = u["params"][sub][leaf], grads["params"][sub][leaf]
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(g), strict=True):
            np.testing.assert_allclose(a, -lr * b, rtol=1e-6)


def test_group_weight_decay_override():
    params = tree()
    zero = jax.tree.map(jnp.zeros_like, params)
    cfg = dict(name="sgd", momentum=0.0, learning_rate=1.0, weight_decay=0.1,
               groups=[dict(pattern="head", weight_decay=0.0)])
    u = first_update(cfg, params, zero)
    np.testing.assert_array_equal(u["params"]["head"]["kernel"], 0.0)
    np.testing.assert_allclose(u["params"]["attn"]["kernel"],
                               -0.1 * params["params"]["attn"]["kernel"], rtol=1e-6)


# -- weight-decay masks ------------------------------------------------------------------

def decayed(cfg):
    """{path: whether the leaf was decayed} from one zero-gradient step."""
    params = tree()
    zero = jax.tree.map(jnp.zeros_like, params)
    u = first_update(cfg, params, zero)
    out = {}
    with_paths = jax.tree_util.tree_leaves_with_path(u)
    for (path, x), p in zip(with_paths, jax.tree.leaves(params), strict=True):
        d = not np.all(np.asarray(x) == 0)
        if d:
            np.testing.assert_allclose(x, -cfg["learning_rate"] * cfg["weight_decay"] * p,
                                       rtol=1e-5)
        out[optim.path_str(path)] = d
    return out


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_decay_mask_default_all_no_bias_norm_and_regexes(name):
    base = dict(name=name, learning_rate=0.5, weight_decay=0.1, momentum=0.0)
    assert all(decayed(base).values())  # the default: today's behaviour, everything decays
    assert all(decayed({**base, "weight_decay_mask": "all"}).values())
    assert decayed({**base, "weight_decay_mask": "no_bias_norm"}) == {
        "params/enc/Dense_0/bias": False, "params/enc/Dense_0/kernel": True,
        "params/enc/LayerNorm_0/scale": False, "params/attn/bias": False,
        "params/attn/kernel": True, "params/head/bias": False, "params/head/kernel": True,
        "params/temp": False}
    got = decayed({**base, "weight_decay_mask": [r"^params/head/", r"LayerNorm"]})
    assert sorted(p for p, d in got.items() if not d) == [
        "params/enc/LayerNorm_0/scale", "params/head/bias", "params/head/kernel"]


# -- layer-wise learning-rate decay (MAE's param_groups_lrd) ------------------------------

def vit_like():
    one = lambda *s: jnp.ones(s)
    return {"params": {
        "patch_embed": {"kernel": one(2, 2)}, "cls_token": one(1, 2), "pos_embed": one(3, 2),
        "blocks_0": {"Dense_0": {"kernel": one(2, 2), "bias": one(2)}},
        "blocks_1": {"Dense_0": {"kernel": one(2, 2)}},
        "blocks_2": {"Dense_0": {"kernel": one(2, 2)}},
        "norm": {"scale": one(2)}, "head": {"kernel": one(2, 2)}}}


def test_layer_decay_follows_mae_rule_exactly():
    params = vit_like()
    grads = jax.tree.map(jnp.ones_like, params)
    lr, d = 0.5, 0.5
    cfg = dict(name="sgd", momentum=0.0, learning_rate=lr, layer_decay=d, num_layers=3)
    u = first_update(cfg, params, grads)
    # L = 3: embeddings layer 0, blocks_i layer i + 1, the rest L + 1; scale d ** (L + 1 - id)
    want = {"patch_embed": d ** 4, "cls_token": d ** 4, "pos_embed": d ** 4,
            "blocks_0": d ** 3, "blocks_1": d ** 2, "blocks_2": d ** 1, "norm": 1.0, "head": 1.0}
    for name, scale in want.items():
        for x in jax.tree.leaves(u["params"][name]):
            np.testing.assert_array_equal(np.asarray(x), -lr * scale)  # exact: powers of 2


def test_layer_decay_multiplies_group_learning_rate_and_custom_pattern():
    params = {"params": {"layers_0": {"w": jnp.ones(2)}, "layers_1": {"w": jnp.ones(2)},
                         "out": {"w": jnp.ones(2)}}}
    grads = jax.tree.map(jnp.ones_like, params)
    cfg = dict(name="sgd", momentum=0.0, learning_rate=1.0, layer_decay=0.5, num_layers=2,
               layer_pattern=r"layers_(\d+)", groups=[dict(pattern="layers_0", learning_rate=4.0)])
    u = first_update(cfg, params, grads)
    np.testing.assert_array_equal(u["params"]["layers_0"]["w"], -4.0 * 0.25)
    np.testing.assert_array_equal(u["params"]["layers_1"]["w"], -0.5)
    np.testing.assert_array_equal(u["params"]["out"]["w"], -1.0)


def test_layer_decay_with_adam_scales_the_update():
    params = vit_like()
    grads = grads_like(params, 3)
    base = dict(name="adam", learning_rate=0.1)
    u0 = first_update(base, params, grads)
    u1 = first_update({**base, "layer_decay": 0.75, "num_layers": 3}, params, grads)
    for name, scale in [("pos_embed", 0.75 ** 4), ("blocks_1", 0.75 ** 2), ("head", 1.0)]:
        a_, b_ = jax.tree.leaves(u1["params"][name]), jax.tree.leaves(u0["params"][name])
        for a, b in zip(a_, b_, strict=True):
            np.testing.assert_allclose(a, scale * b, rtol=1e-6)


def test_block_beyond_num_layers_is_an_error():
    tx = optim.make_optimizer(dict(layer_decay=0.5, num_layers=2), 10)
    with pytest.raises(ValueError, match="num_layers=2 but 'params/blocks_2/Dense_0/kernel'"):
        tx.init(vit_like())


# -- LARS, LAMB and the new schedules ----------------------------------------------------

@pytest.mark.parametrize("name", ["lars", "lamb"])
@pytest.mark.parametrize("mask", ["all", "no_bias_norm"])
def test_lars_and_lamb_construct_and_step(name, mask):
    params = tree()
    cfg = dict(name=name, learning_rate=0.1, weight_decay=1e-2, weight_decay_mask=mask,
               schedule="linear", warmup_steps=2)
    new, _ = run(cfg, params, [grads_like(params, s) for s in range(4)])
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params), strict=True):
        assert np.all(np.isfinite(a)) and not np.allclose(a, b)


def test_lars_is_optax_lars():
    params = tree()
    grads = [grads_like(params, s) for s in range(3)]
    ours, _ = run(dict(name="lars", learning_rate=0.1, weight_decay=1e-3), params, grads)
    tx = optax.lars(0.1, weight_decay=1e-3, momentum=0.9)
    state, ref = tx.init(params), params
    for g in grads:
        u, state = tx.update(g, state, ref)
        ref = optax.apply_updates(ref, u)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)


def test_linear_and_inverse_sqrt_schedules():
    lin = optim.make_schedule(dict(schedule="linear", learning_rate=1.0, warmup_steps=10,
                                   end_lr_factor=0.1), 110)
    np.testing.assert_allclose([lin(0), lin(5), lin(10), lin(60), lin(110)],
                               [0.0, 0.5, 1.0, 0.55, 0.1], rtol=1e-6, atol=1e-7)
    nowarm = optim.make_schedule(dict(schedule="linear", learning_rate=2.0), 100)
    np.testing.assert_allclose([nowarm(0), nowarm(50), nowarm(100)], [2.0, 1.0, 0.0], atol=1e-6)
    isq = optim.make_schedule(dict(schedule="inverse_sqrt", learning_rate=1.0,
                                   warmup_steps=16), 1000)
    np.testing.assert_allclose([isq(0), isq(8), isq(16), isq(64), isq(256)],
                               [0.0, 0.5, 1.0, 0.5, 0.25], rtol=1e-6)
    params = tree()
    run(dict(schedule="inverse_sqrt", warmup_steps=2), params, [grads_like(params, 0)] * 3)


# -- gradient accumulation ---------------------------------------------------------------

@pytest.mark.parametrize("c", [dict(name="sgd", momentum=0.9, learning_rate=0.05),
                               dict(name="adam", learning_rate=0.01, grad_clip_norm=1.0)])
def test_accumulation_equals_one_step_on_the_large_batch(c):
    k, n = 4, 8
    x = jax.random.normal(jax.random.key(1), (3 * k * n, 5))
    y = x @ jnp.arange(5.0) + 1.0 + 0.1 * jax.random.normal(jax.random.key(2), (3 * k * n,))
    params = {"w": jnp.zeros(5), "b": jnp.zeros(())}
    loss = lambda p, xb, yb: jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)
    grad = jax.jit(jax.grad(loss))

    big_tx = optim.make_optimizer(c, 3)
    acc_tx = optim.make_optimizer({**c, "accumulate_steps": k}, 3 * k)
    big, acc = params, params
    big_state, acc_state = big_tx.init(big), acc_tx.init(acc)
    for step in range(3):
        lo = step * k * n
        u, big_state = big_tx.update(grad(big, x[lo:lo + k * n], y[lo:lo + k * n]), big_state,
                                     big)
        big = optax.apply_updates(big, u)
        for m in range(k):
            before = acc
            sl = slice(lo + m * n, lo + (m + 1) * n)
            u, acc_state = acc_tx.update(grad(acc, x[sl], y[sl]), acc_state, acc)
            acc = optax.apply_updates(acc, u)
            if m < k - 1:  # nothing is applied until the k-th micro-batch
                for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(before), strict=True):
                    np.testing.assert_array_equal(a, b)
        # float32: the mean of 4 micro-batch means vs one mean over the 4x batch
        for a, b in zip(jax.tree.leaves(acc), jax.tree.leaves(big), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert not np.allclose(big["w"], 0.0)


def test_accumulation_schedule_counts_optimizer_updates():
    params = {"w": jnp.zeros(())}
    ones = {"w": jnp.ones(())}
    cfg = dict(name="sgd", momentum=0.0, learning_rate=1.0, schedule="linear",
               accumulate_steps=4)
    new, _ = run(cfg, params, [ones] * 8, total_steps=8)  # 2 updates: lr 1, then 0.5
    np.testing.assert_allclose(new["w"], -1.5, rtol=1e-6)


# -- config errors -----------------------------------------------------------------------

@pytest.mark.parametrize("cfg, message", [
    (dict(weight_decay_msk="all"), "unknown key 'weight_decay_msk'; did you mean "
                                   "'weight_decay_mask'"),
    (dict(name="lasr"), "name='lasr' is not one of .*did you mean 'lars'"),
    (dict(schedule="inverse_sqr"), "did you mean 'inverse_sqrt'"),
    (dict(schedule="inverse_sqrt"), "warmup_steps must be >= 1 for schedule 'inverse_sqrt'"),
    (dict(weight_decay_mask="no_bias"), "weight_decay_mask='no_bias'.*did you mean "
                                        "'no_bias_norm'"),
    (dict(weight_decay_mask=["("]), r"weight_decay_mask\[0\]='\(' is not a valid regex"),
    (dict(groups=dict(pattern="x")), "groups=.* must be a list of dicts"),
    (dict(groups=[dict(learning_rate=1.0)]), r"groups\[0\]: missing key 'pattern'"),
    (dict(groups=[dict(pattern="x", frozn=True)]), r"groups\[0\]: unknown key 'frozn'; "
                                                    "did you mean 'frozen'"),
    (dict(groups=[dict(pattern="x", learning_rate=-1)]), r"groups\[0\].learning_rate=-1 must"),
    (dict(groups=[dict(pattern="x", frozen="yes")]), r"groups\[0\].frozen='yes' must be True"),
    (dict(groups=[dict(pattern="[")]), r"groups\[0\].pattern='\[' is not a valid regex"),
    (dict(layer_decay=1.5, num_layers=2), "layer_decay=1.5 must be None or in"),
    (dict(layer_decay=0.5), "num_layers .* is required with layer_decay"),
    (dict(layer_decay=0.5, num_layers=0), "num_layers=0 must be an int >= 1"),
    (dict(layer_pattern="blocks_"), "layer_pattern='blocks_' must have exactly 1 capturing"),
    (dict(accumulate_steps=0), "accumulate_steps=0 must be an int >= 1"),
    (dict(accumulate_steps=2.5), "accumulate_steps=2.5 must be an int >= 1"),
    (dict(trust_coefficient=0), "trust_coefficient=0 must be a number > 0"),
])
def test_bad_keys_are_one_line_errors(cfg, message):
    with pytest.raises(ValueError, match=message) as e:
        optim.check_config(cfg)
    assert "\n" not in str(e.value)
