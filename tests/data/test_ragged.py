"""Examples of different shapes (tfds ImageNet-style) through the pipeline.

A tfds dataset registered here, prepared into a temporary data dir the way a user prepares
one (`download_and_prepare`, array_record): colour images of random sizes, a string
`file_name` and a label. The pipeline must drop the text field, crop each image on its own
(`random_resized_crop` first) and give the same draws as a whole-batch call."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_gen.data import inputs
from ssl_gen.data import preprocess as pp
from ssl_gen.data.pipeline import gather


class RaggedPhotosForTest(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8,
                                          encoding="bytes"),
            "label": tfds.features.ClassLabel(num_classes=3),
            "file_name": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 24), "test": self._generate_examples(1, 9)}

    def _generate_examples(self, seed, n):
        rng = np.random.default_rng(seed)
        for i in range(n):
            h, w = (int(a) for a in rng.integers(10, 30, 2))
            yield i, {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                      "label": i % 3, "file_name": f"img_{seed}_{i}.png"}


NAME = "ragged_photos_for_test"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds"))
    RaggedPhotosForTest(data_dir=d, file_format="array_record").download_and_prepare()
    return d


def _config(data_dir):
    return dict(name=NAME, data_dir=data_dir, train_split="train", eval_split="test",
                preprocess=({"name": "random_resized_crop", "size": 12, "scale": (0.2, 1.0)},
                            {"name": "flip"}, {"name": "normalize", "scale": 1 / 255}),
                eval_preprocess=({"name": "random_resized_crop", "size": 12,
                                  "eval_crop": 0.875}, {"name": "normalize", "scale": 1 / 255}))


def test_variable_size_images_batch_after_the_crop(data_dir):
    built = inputs.build_inputs(_config(data_dir), batch_size=8, seed=0, process_index=0,
                                process_count=1)
    batch = next(built.pipeline)
    assert set(batch) == {"image", "label"}  # file_name (text) dropped
    assert batch["image"].shape == (8, 12, 12, 3) and batch["image"].dtype == np.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    ev = gather(built.eval_source, np.arange(9))
    assert ev["image"].shape == (9, 12, 12, 3)
    again = inputs.build_inputs(_config(data_dir), batch_size=8, seed=0, process_index=0,
                                process_count=1)
    np.testing.assert_array_equal(next(again.pipeline)["image"], batch["image"])


def test_eval_crop_is_the_central_square(data_dir):
    source = tfds.builder(NAME, data_dir=data_dir).as_data_source(split="test")
    image = np.asarray(source[0]["image"])
    h, w = image.shape[:2]
    (op,) = pp.parse([{"name": "random_resized_crop", "size": 8, "eval_crop": 0.5}])
    ctx = pp.Context.make(0, pp.FIXED_EPOCH, np.array([0]), train=False)
    out = pp.apply([op], {"image": [image]}, ctx)["image"][0]
    side = int(round(0.5 * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    want = pp.resize_boxes(image[None], np.array([[top, left, side, side]]), (8, 8))[0]
    np.testing.assert_array_equal(out, want)


def test_one_at_a_time_draws_what_the_whole_batch_draws():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 20, 20, 3)).astype(np.uint8)
    ops = pp.parse([{"name": "random_resized_crop", "size": 10}, "flip",
                    {"name": "color_jitter", "brightness": 0.4, "max_value": 255}])
    ctx = pp.Context.make(3, 2, np.arange(6))
    whole = pp.apply(ops, {"image": images}, ctx)["image"]
    alone = pp.apply(ops, {"image": list(images)}, ctx)["image"]
    np.testing.assert_allclose(alone, whole, rtol=1e-6, atol=1e-4)


def test_still_ragged_after_the_ops_is_one_line():
    images = [np.zeros((5, 7, 3), np.uint8), np.zeros((6, 6, 3), np.uint8)]
    ctx = pp.Context.make(0, 0, np.arange(2))
    with pytest.raises(ValueError, match="start config.dataset.preprocess .* random_resized_crop"):
        pp.apply(pp.parse(["flip"]), {"image": images}, ctx)
