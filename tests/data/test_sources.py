"""Embedded builders and lookup by name: contents, splits, reuse, and the one-line errors.

Every dataset is built once per session into a temporary data dir (never the home dir).
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ssl_gen import data
from ssl_gen.data import builders


@pytest.fixture(scope="session")
def sources(data_dir):
    """name -> split -> InMemorySource, every embedded dataset (built here, once)."""
    return {name: {split: data.get_source(name, split, data_dir) for split in ("train", "test")}
            for name in data.EMBEDDED_DATASETS}


EXPECTED = {
    "digits": (1437, 360, {"image": ((8, 8, 1), np.uint8, 0, 16)}),
    "digits_binarized": (1437, 360, {"image": ((8, 8, 1), np.uint8, 0, 1),
                                     "grey": ((8, 8, 1), np.uint8, 0, 16)}),
    "mnist1d": (4000, 1000, {"x": ((40,), np.float32, None, None)}),
    "photo_patches": (20000, 2000, {"image": ((32, 32, 3), np.uint8, 0, 255)}),
    "labelled_photos": (10000, 2000, {"image": ((32, 32, 3), np.uint8, 0, 255)}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_shapes_dtypes_ranges_ids(sources, name):
    n_train, n_test, fields = EXPECTED[name]
    train, test = sources[name]["train"], sources[name]["test"]
    assert (len(train), len(test)) == (n_train, n_test)
    for source in (train, test):
        arrays = source.arrays
        for key, (shape, dtype, lo, hi) in fields.items():
            assert arrays[key].shape == (len(source),) + shape
            assert arrays[key].dtype == dtype
            if lo is not None:
                assert arrays[key].min() == lo and arrays[key].max() == hi
        assert arrays["id"].dtype == np.int64
        ids = arrays["id"]
        assert np.all(np.diff(ids) > 0), "ids must be unique and the source sorted by id"
        if "label" in arrays:
            assert arrays["label"].dtype == np.int64
            assert set(np.unique(arrays["label"])) == set(range(10))
    # The two splits are disjoint and together cover the ids 0..n-1 exactly once.
    all_ids = np.concatenate([train.arrays["id"], test.arrays["id"]])
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(n_train + n_test))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_matches_built_dataset(sources, name):
    spec = data.dataset_info(name)
    for split, source in sources[name].items():
        assert spec.splits[split] == len(source)
        assert set(spec.features) == set(source.arrays)
        for key, (shape, dtype) in spec.features.items():
            assert source.arrays[key].shape[1:] == shape
            assert source.arrays[key].dtype.name == dtype
    assert spec.input_key in spec.features


def test_spec_levels_and_classes():
    assert data.dataset_info("digits").grey_levels == 17
    assert data.dataset_info("digits_binarized").grey_levels == 2
    assert data.dataset_info("mnist1d").grey_levels is None
    assert data.dataset_info("digits").num_classes == 10
    assert data.dataset_info("photo_patches").num_classes is None
    assert data.dataset_info("labelled_photos").num_classes == 10
    assert data.dataset_info("labelled_photos").grey_levels == 256


def test_digits_equal_sklearn_rows_by_id(sources):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for source in sources["digits"].values():
        ids = source.arrays["id"]
        np.testing.assert_array_equal(source.arrays["image"][..., 0], digits.images[ids])
        np.testing.assert_array_equal(source.arrays["label"], digits.target[ids])
    # Stratified: every class keeps about a fifth of its examples in test.
    test_counts = np.bincount(sources["digits"]["test"].arrays["label"])
    np.testing.assert_allclose(test_counts / np.bincount(digits.target), 0.2, atol=0.01)


def test_digits_binarized_is_thresholded_digits(sources):
    for split in ("train", "test"):
        grey = sources["digits"][split].arrays
        binary = sources["digits_binarized"][split].arrays
        np.testing.assert_array_equal(binary["id"], grey["id"])
        np.testing.assert_array_equal(binary["grey"], grey["image"])
        np.testing.assert_array_equal(binary["image"], (grey["image"] >= 8).astype(np.uint8))


def test_mnist1d_is_the_canonical_generation(sources):
    from mnist1d.data import get_dataset_args

    args = get_dataset_args()
    assert (args.num_samples, args.train_split, args.seed) == (5000, 0.8, 42)
    train, test = sources["mnist1d"]["train"].arrays, sources["mnist1d"]["test"].arrays
    # Ids are positions in the package's arrays; these are its first labels with seed 42.
    np.testing.assert_array_equal(train["label"][:10], [2, 6, 4, 5, 6, 6, 6, 0, 3, 1])
    labels = np.concatenate([train["label"], test["label"]])
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 500))
    # The package standardizes the whole dataset; the train part is close to that.
    assert abs(train["x"].mean()) < 0.1 and abs(train["x"].std() - 1) < 0.1


def test_mnist1d_generation_leaves_the_global_rngs_alone(monkeypatch):
    import random

    import mnist1d.data

    def fake_make_dataset(args):
        random.seed(args.seed)
        np.random.seed(args.seed)
        x, y = np.zeros((5, 40)), np.arange(5)
        return {"x": x[:4], "y": y[:4], "x_test": x[4:], "y_test": y[4:]}

    monkeypatch.setattr(mnist1d.data, "make_dataset", fake_make_dataset)
    np_state, py_state = np.random.get_state(), random.getstate()
    arrays = builders.mnist1d_arrays()
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    np.testing.assert_array_equal(arrays["test"]["id"], [4])
    assert arrays["train"]["x"].dtype == np.float32


def _locate(crop, photos):
    """(photo index, y, x) of a crop, found by its first row's bytes, or None."""
    needle = np.ascontiguousarray(crop[0]).tobytes()
    for k, photo in enumerate(photos):
        for y in range(photo.shape[0] - crop.shape[0] + 1):
            row = photo[y].tobytes()
            start = row.find(needle)
            while start >= 0:
                if start % 3 == 0:
                    x = start // 3
                    if np.array_equal(photo[y:y + crop.shape[0], x:x + crop.shape[1]], crop):
                        return k, y, x
                start = row.find(needle, start + 1)
    return None


def test_photo_patches_train_and_test_regions_are_disjoint(sources):
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    cut = int(photos[0].shape[1] * builders.PATCH_TRAIN_FRACTION)
    for split, in_region in (("train", lambda x: x + 32 <= cut), ("test", lambda x: x >= cut)):
        images = sources["photo_patches"][split].arrays["image"]
        for i in np.linspace(0, len(images) - 1, 12).astype(int):
            where = _locate(images[i], photos)
            assert where is not None, f"{split} crop {i} is not a crop of the photos"
            assert in_region(where[2]), f"{split} crop {i} at x={where[2]} outside its region"


def test_labelled_photos_are_crops_of_their_labelled_photo_from_disjoint_regions(sources):
    photos = builders._labelled_photos()
    assert len(photos) == len(builders.LABELLED_PHOTOS) == 10
    for split, in_region in (("train", lambda x, w: x + 32 <= int(w * 0.75)),
                             ("test", lambda x, w: x >= int(w * 0.75))):
        arrays = sources["labelled_photos"][split].arrays
        counts = np.bincount(arrays["label"], minlength=10)
        assert set(counts) == {len(arrays["label"]) // 10}, counts  # balanced classes
        for i in np.linspace(0, len(arrays["image"]) - 1, 20).astype(int):
            label = int(arrays["label"][i])
            where = _locate(arrays["image"][i], [photos[label]])
            assert where is not None, f"{split} crop {i} is not a crop of photo {label}"
            assert in_region(where[2], photos[label].shape[1]), (
                f"{split} crop {i} at x={where[2]} outside its region")


def test_second_get_source_reuses_the_build(sources, data_dir, monkeypatch):
    info = os.path.join(data_dir, "digits", "1.0.0", "dataset_info.json")
    mtime = os.path.getmtime(info)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt a prepared dataset")

    monkeypatch.setattr(builders.Digits, "_split_generators", no_rebuild)
    again = data.get_source("digits", "train", data_dir)
    assert os.path.getmtime(info) == mtime
    np.testing.assert_array_equal(again.arrays["image"], sources["digits"]["train"].arrays["image"])


def test_default_data_dir_is_tfds_data_dir(sources, data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    assert len(data.get_source("digits", "test")) == 360
    with pytest.raises(data.DatasetNotFoundError, match=data_dir):
        data.check_dataset("mnist", "train")


def test_tfds_data_source_reads_embedded_without_tensorflow(sources, data_dir):
    ds = tfds.data_source("digits", split="test", data_dir=data_dir)
    assert len(ds) == 360
    example = ds[0]
    by_id = sources["digits"]["test"].arrays
    row = int(np.searchsorted(by_id["id"], example["id"]))
    np.testing.assert_array_equal(example["image"], by_id["image"][row])
    assert "tensorflow" not in sys.modules


def test_not_in_memory_source_is_the_tfds_source(sources, data_dir):
    source = data.get_source("digits", "test", data_dir, in_memory=False)
    assert not isinstance(source, data.InMemorySource)
    batch = data.gather(source, np.arange(5))
    by_id = sources["digits"]["test"].arrays
    rows = np.searchsorted(by_id["id"], batch["id"])
    np.testing.assert_array_equal(batch["image"], by_id["image"][rows])


@pytest.mark.parametrize("name", ["mnist", "no_such_dataset_xyz", "cifar10:3.0.2"])
def test_missing_dataset_is_a_one_line_error(data_dir, name):
    for call in (data.check_dataset, data.get_source):
        with pytest.raises(data.DatasetNotFoundError) as err:
            call(name, "train", data_dir)
        message = str(err.value)
        assert "\n" not in message
        assert isinstance(err.value, ValueError)
        assert repr(name) in message and data_dir in message
        assert f"tfds build {name}" in message and "download_and_prepare" in message
        for embedded in data.EMBEDDED_DATASETS:
            assert embedded in message
    assert not os.path.exists(os.path.join(data_dir, "mnist")), "must not try to download"


def test_malformed_name_is_a_one_line_error(data_dir):
    with pytest.raises(data.DatasetNotFoundError, match="not a dataset name") as err:
        data.check_dataset("foo bar", "train", data_dir)
    assert "\n" not in str(err.value) and "digits_binarized" in str(err.value)


def test_unknown_split_is_a_one_line_error(data_dir):
    for name in ("digits", "photo_patches"):
        with pytest.raises(ValueError, match=r"unknown split 'validation'.*train, test") as err:
            data.check_dataset(name, "validation", data_dir)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        data.get_source("digits", "train[:10]+valid", data_dir)
    data.check_dataset("digits", "train[:10%]+test", data_dir)


class ToyPrepared(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A stand-in for a real, user-prepared tfds dataset (not embedded, not registered)."""

    VERSION = tfds.core.Version("1.2.0")
    name = "toy_prepared"

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(num_classes=3),
            "id": tfds.features.Scalar(dtype=np.int64)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 30),
                "validation": self._generate_examples(30, 40)}

    def _generate_examples(self, lo, hi):
        for i in range(lo, hi):
            yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3, "id": i}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("toy"))
    ToyPrepared(data_dir=directory, file_format="array_record").download_and_prepare()
    return directory


def test_prepared_tfds_dataset_by_name(toy_dir):
    data.check_dataset("toy_prepared", "validation", toy_dir)
    source = data.get_source("toy_prepared", "train", toy_dir)
    assert len(source) == 30 and not isinstance(source, data.InMemorySource)
    assert sorted(int(source[i]["id"]) for i in range(30)) == list(range(30))
    in_memory = data.get_source("toy_prepared", "validation", toy_dir, in_memory=True)
    np.testing.assert_array_equal(in_memory.arrays["id"], np.arange(30, 40))
    spec = data.dataset_info("toy_prepared", toy_dir)
    assert spec.splits == {"train": 30, "validation": 10}
    assert spec.features["image"] == ((4, 4, 1), "uint8")
    assert (spec.num_classes, spec.input_key, spec.grey_levels) == (3, "image", 256)
    with pytest.raises(ValueError, match="unknown split 'test'.*train, validation"):
        data.check_dataset("toy_prepared", "test", toy_dir)


def test_dataset_prepared_only_as_tfrecord_is_a_one_line_error(toy_dir, tmp_path):
    shutil.copytree(os.path.join(toy_dir, "toy_prepared"), tmp_path / "toy_prepared")
    info_path = tmp_path / "toy_prepared" / "1.2.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(data.DatasetNotFoundError, match="only as tfrecord") as err:
        data.check_dataset("toy_prepared", "train", str(tmp_path))
    assert "\n" not in str(err.value) and "--file_format=array_record" in str(err.value)


def test_pipeline_over_digits(sources):
    source = sources["digits_binarized"]["train"]
    pipeline = data.InputPipeline(source, global_batch_size=128, seed=0, process_count=1,
                                  process_index=0,
                                  preprocess=[{"name": "binarize", "mode": "dynamic"}])
    batch = next(pipeline)
    assert batch["image"].shape == (128, 8, 8, 1) and batch["image"].dtype == np.uint8
    assert set(np.unique(batch["image"])) <= {0, 1}
    assert pipeline.local_batch_size == 128
