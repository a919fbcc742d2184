"""config.dataset.binarize_eval: a binarized-MNIST-like run on `digits` (17 grey levels).

Training binarizes dynamically (Bernoulli(grey / 16) every epoch) while the evaluations read
the threshold binarization, which is exactly `digits_binarized`'s `image`: the pixel
baseline fitted on it must equal the one fitted on digits_binarized.
"""

import numpy as np
import pytest

from ssl_gen import data
from ssl_gen.evals import gradient_variance, pixel_baseline
from ssl_gen.train import trainer
from tests.train.conftest import load_config


@pytest.mark.slow  # ~15 s on 2 busy CPU cores: the digits builds, compiles and evals
def test_threshold_eval_on_digits_trains_and_evaluates(data_dir, tmp_path):
    config = load_config("experiments/dvae_estimators.py", "runlocal")
    config.dataset.update(name="digits", data_dir=data_dir, dynamic_binarization=True,
                          grey_max=16, binarize_eval="threshold")
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.checkpoint_every_steps = 4
    config.progress_bar = False

    b = trainer.build(config, str(tmp_path))
    train_bits = next(b.pipeline)["image"]
    assert set(np.unique(train_bits)) == {0, 1}  # dynamic bits, not the 0..16 levels
    binarized = {split: data.get_source("digits_binarized", split, data_dir).arrays["image"]
                 for split in ("train", "test")}
    for split, key in (("train", "train_source"), ("test", "eval_source")):
        assert isinstance(getattr(b, key), data.PreprocessedSource)
        np.testing.assert_array_equal(getattr(b, key).arrays["image"], binarized[split])
    np.testing.assert_array_equal(gradient_variance.fixed_batch(b.train_source, 8)["image"],
                                  binarized["train"][:8])

    final = trainer.train_and_evaluate(config, str(tmp_path))
    assert final["step"] == 4 and final["num_traces"] == 1
    assert all(np.isfinite(v) for v in final.values())
    expected = pixel_baseline.fit_and_score(binarized["train"], binarized["test"], 2)
    assert final["pixel_baseline_nll"] == expected
