"""The MAE and fine-tuning configs: the MAE runlocal builds; the fine-tune's layer-wise
decay patterns give each parameter the layer MAE's param_groups_lrd would; and (slow) a
tiny pre-training run starts a fine-tune through config.init_from: the encoder's weights
arrive under the classifier's names, the head starts fresh, and the fine-tune trains."""

import os

import jax
import numpy as np
import pytest

from ssl_gen.train import checkpoint, optim, trainer
from ssl_gen.train import init as init_lib
from tests.train.conftest import load_config


def _config(path, arg, data_dir):
    c = load_config(path, arg)
    c.dataset.data_dir = data_dir
    c.progress_bar = False
    return c


@pytest.mark.slow  # the first build of the session's digits dataset
def test_mae_runlocal_builds(data_dir):
    b = trainer.build(_config("experiments/mae.py", "runlocal", data_dir), "")
    params = b.abstract_state["params"]["params"]
    assert set(params) >= {"encoder", "decoder", "decoder_embed", "decoder_pred", "mask_token"}
    assert [p.name for p in b.objective.parts] == ["model"]


def test_finetune_layer_decay_follows_mae_param_groups_lrd(data_dir):
    c = _config("experiments/vit_finetune.py", "runlocal", data_dir)
    b = trainer.build(c, "")
    depth = c.model.kwargs.depth
    labels = optim.param_labels(c.optimizer)(b.abstract_state["params"])
    flat = {optim.path_str(p): v for p, v in
            jax.tree_util.tree_flatten_with_path(labels)[0]}
    layer = lambda path: int(flat[path].split(":")[1])
    assert layer("params/embedding/kernel") == 0 and layer("params/cls") == 0
    for i in range(depth):
        assert layer(f"params/Transformer/encoderblock_{i}/MlpBlock_0/Dense_0/kernel") == i + 1
    assert layer("params/Transformer/encoder_norm/scale") == depth + 1
    assert layer("params/head/kernel") == depth + 1


@pytest.mark.slow
def test_pretrain_then_init_from_then_finetune(data_dir, tmp_path):
    pre = _config("experiments/mae.py", "runlocal", data_dir)
    pre.num_train_steps, pre.checkpoint_every_steps = 3, 3
    pre.evals = {"few_shot": dict(every_steps=0, kwargs=dict(shots=(1,), seeds=(0,)))}
    pre_dir = str(tmp_path / "mae")
    out = trainer.train_and_evaluate(pre, pre_dir)
    assert np.isfinite(out["fewshot1_acc"]) and "fewshot1_acc_random_init" in out

    ft = _config("experiments/vit_finetune.py", f"runlocal,init={pre_dir}", data_dir)
    ft.num_train_steps = 2
    b = trainer.build(ft, "")
    init_lib.check(ft.init_from, b.abstract_state, model_name="vit")
    fresh = jax.jit(b.init_fn)(b.init_key)
    state, report = init_lib.initialize_from(ft.init_from, fresh, model_name="vit")
    assert "fresh" in report and "head" in report
    src = checkpoint.read_state(os.path.join(pre_dir, "checkpoints", "3"), ("params",))
    enc = src["params"]["params"]["encoder"]
    got = state["params"]["params"]
    np.testing.assert_array_equal(got["embedding"]["kernel"], enc["embedding"]["kernel"])
    np.testing.assert_array_equal(got["cls"], enc["cls"])
    np.testing.assert_array_equal(
        got["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_1"]["kernel"],
        enc["Transformer"]["encoderblock_1"]["MlpBlock_0"]["Dense_1"]["kernel"])
    np.testing.assert_array_equal(got["head"]["kernel"],
                                  fresh["params"]["params"]["head"]["kernel"])

    final = trainer.train_and_evaluate(ft, str(tmp_path / "ft"))
    assert final["step"] == 2 and 0.0 <= final["accuracy"] <= 1.0
