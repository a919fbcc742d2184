"""`experiments/vit_finetune.py:...,pretrained=FILE`: a run started from a published
checkpoint (written here by Hugging Face transformers' `save_pretrained`)."""

import numpy as np
import pytest
import torch  # the `parity` extra
from transformers import ViTConfig, ViTForImageClassification

from ssl_gen.train import trainer
from tests.train.conftest import load_config


@pytest.mark.slow  # a two-step fine-tuning run (compiles the train step)
def test_vit_finetune_from_a_hub_checkpoint(data_dir, tmp_path, capsys):
    """`experiments/vit_finetune.py:runlocal,pretrained=FILE` on the digits from a Hugging
    Face checkpoint of the runlocal encoder's shape: it loads (the report names every mapped
    subtree) and trains."""
    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=8, patch_size=2, num_channels=1,
                    num_labels=3)
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "hub")
    config = load_config("experiments/vit_finetune.py",
                         f"runlocal,pretrained={tmp_path / 'hub' / 'model.safetensors'}")
    config.dataset.data_dir = data_dir
    config.num_train_steps = 2
    config.progress_bar = False
    final = trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["step"] == 2 and np.isfinite(final["accuracy"])
    report = capsys.readouterr().err  # the trainer prints init_from's report
    assert "read by ssl_gen.models.vit.load" in report
    assert "pos_embedding" in report and "Transformer" in report


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_the_full_size_variant_is_a_vit_b16_at_224(tmp_path, dataset):
    from ssl_gen.train import config_check

    config = load_config("experiments/vit_finetune.py", f"{dataset},pretrained=vit_b16.pth")
    config.init_from.path = str(tmp_path / "vit_b16.pth")  # validate checks that it exists
    (tmp_path / "vit_b16.pth").write_bytes(b"")
    config_check.validate(config)
    kw = config.model.kwargs
    assert (kw.variant, kw.image_size, kw.posemb, kw.width) == ("B/16", 224, "learn", None)
    assert "head" not in config.init_from.mapping
    assert any(op.get("size") == 224 for op in config.dataset.preprocess)
    with pytest.raises(ValueError, match="combine it with cifar10"):
        load_config("experiments/vit_finetune.py", "pretrained=vit_b16.pth")
    with pytest.raises(ValueError, match="not both"):
        load_config("experiments/vit_finetune.py", "init=runs/mae,pretrained=vit_b16.pth")
