"""`data.build_inputs` / `data.check_config`: config.dataset -> the run's inputs, on `digits`.

The old binarization keys must build exactly what the `binarize` op they stand for builds.
"""

import numpy as np
import pytest

from ssl_gen import data


def _ds(data_dir, **kw):
    return {"name": "digits", "data_dir": data_dir, **kw}


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_old_keys_build_what_the_binarize_op_builds(data_dir):
    old = data.build_inputs(_ds(data_dir, dynamic_binarization=True, grey_max=16,
                                binarize_eval="threshold"), batch_size=64, seed=2)
    new = data.build_inputs(_ds(data_dir, preprocess=[
        {"name": "binarize", "mode": "dynamic", "eval": "threshold"}]), batch_size=64, seed=2)
    assert old.train_ops == new.train_ops and len(new.eval_ops) == 1
    for _ in range(3):
        _same(next(old.pipeline), next(new.pipeline))
    # Evaluations read the threshold binarization: exactly digits_binarized's image.
    for split, source in (("train", new.train_source), ("test", new.eval_source)):
        binarized = data.get_source("digits_binarized", split, data_dir).arrays
        np.testing.assert_array_equal(source.arrays["image"], binarized["image"])
        np.testing.assert_array_equal(source.arrays["label"], binarized["label"])
    batch = next(new.pipeline)
    assert set(np.unique(batch["image"])) == {0, 1}  # dynamic bits, not the 0..16 levels


def test_example_is_the_first_batch_and_leaves_the_pipeline_alone(data_dir):
    inputs = data.build_inputs(_ds(data_dir, preprocess=["flip"]), batch_size=32, seed=0,
                               process_index=1, process_count=2)
    assert inputs.example["image"].shape == (16, 8, 8, 1)
    assert inputs.pipeline.get_state() == {"next_batch": 0}
    _same(inputs.example, next(inputs.pipeline))
    # No op has an evaluation form: evaluations read the sources as stored.
    assert inputs.eval_ops == () and isinstance(inputs.eval_source, data.InMemorySource)
    assert len(inputs.eval_source) == 360 and len(inputs.train_source) == 1437


def test_eval_preprocess_overrides_the_default(data_dir):
    inputs = data.build_inputs(
        _ds(data_dir, preprocess=[{"name": "normalize", "scale": 1 / 16}],
            eval_preprocess=[{"name": "normalize", "scale": 1 / 8}]), batch_size=16, seed=0)
    raw = data.get_source("digits", "test", data_dir).arrays["image"]
    np.testing.assert_allclose(inputs.eval_source[3]["image"], raw[3] / 8)
    assert next(inputs.pipeline)["image"].max() <= 1.0


@pytest.mark.parametrize("kw, message", [
    ({"preprocces": []}, "config.dataset: unknown key 'preprocces'; did you mean 'preprocess'?"),
    ({"num_workers": -1}, "config.dataset.num_workers=-1 must be an int >= 0"),
    ({"preprocess": [{"name": "binarize", "mode": "dynamic"}], "dynamic_binarization": True},
     "say the same thing twice"),
    ({"eval_preprocess": ["flop"]}, "config.dataset.eval_preprocess[0]: unknown op 'flop'"),
    ({"dynamic_binarization": "yes"}, "dynamic_binarization='yes' must be True or False"),
])
def test_bad_dataset_configs_are_one_line_errors(kw, message):
    with pytest.raises(ValueError) as e:
        data.check_config({"name": "digits", **kw})
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="missing key 'name'"):
        data.check_config({})


def test_bad_batch_size_is_a_one_line_error(data_dir):
    with pytest.raises(ValueError, match="multiple of the process count 3"):
        data.build_inputs(_ds(data_dir), batch_size=16, seed=0, process_index=0,
                          process_count=3)
