"""TF-free tfds builders for the embedded datasets (digits, mnist1d, photo_patches, ...).

Why: the default experiments must run with no network and without TensorFlow, yet read
their data the same way as any real tfds dataset (random access through
`tfds.data_source`). Each builder turns data shipped inside a well-kept package into a local
tfds dataset in the `array_record` format (tfds' `tfrecord` default needs TensorFlow).

Rules every builder here follows:

- `file_format="array_record"` is the default of the constructor, so `tfds.builder(name)`
  and `tfds.data_source(name)` work too once this module is imported (the builders are
  registered with tfds under their names).
- Features are `tfds.features.Tensor` / `Scalar` / `ClassLabel` fed with numpy arrays
  (`tfds.features.Image` would encode through TensorFlow). Tensors use `encoding="bytes"`
  (raw bytes, `np.frombuffer` on read): several times faster to write and read than the
  default, which stores every pixel as a protobuf int64.
- Every example carries a unique integer `id` (unique across splits too). tfds shuffles
  records on write (deterministically, by a hash of the key), so the file order is stable
  but not meaningful; `ssl_gen.data.sources` sorts by `id` when it loads a split.
- Splits are fixed and generated from fixed seeds: building twice gives the same data.
  Building takes a few seconds and happens once per data dir; a prepared dataset is reused.

The array generators (`digits_arrays`, `mnist1d_arrays`, `photo_patch_arrays`,
`labelled_photo_arrays`) are public so tests can compare the built datasets with their sources.
"""

from __future__ import annotations

import random

import numpy as np
import tensorflow_datasets as tfds

# Digits: a fixed stratified split of the 1,797 images.
DIGITS_NUM_TEST = 360
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_LEVEL = 16
DIGITS_THRESHOLD = 8  # digits_binarized: pixel >= 8 (of 0..16) -> 1

# Photo patches: crop size, counts and seed.
PATCH_SIZE = 32
PATCH_NUM_TRAIN = 20_000
PATCH_NUM_TEST = 2_000
PATCH_SEED = 0
PATCH_TRAIN_FRACTION = 0.75  # train crops lie in the left 75% of each photo's columns

# Labelled photos: 32x32 crops of ten colour photographs, the label the photograph's index.
# (name, loader): scikit-learn's two sample photos, then eight of scikit-image's bundled ones
# (inside its wheel: no download). The order is the label order; never reorder it.
LABELLED_PHOTOS = (
    ("china", "sklearn"), ("flower", "sklearn"), ("astronaut", "skimage"),
    ("chelsea", "skimage"), ("coffee", "skimage"), ("rocket", "skimage"),
    ("hubble_deep_field", "skimage"), ("retina", "skimage"),
    ("immunohistochemistry", "skimage"), ("stereo_motorcycle", "skimage"))
LABELLED_NUM_TRAIN = 1_000  # crops per photo
LABELLED_NUM_TEST = 200
LABELLED_SEED = 1


def digits_arrays() -> dict[str, dict[str, np.ndarray]]:
    """scikit-learn's `load_digits`, split into fixed stratified train/test parts.

    Returns:
      `{"train": {...}, "test": {...}}`, each with `image` uint8 (n, 8, 8, 1) in 0..16,
      `label` int64 (n,) and `id` int64 (n,): the row of the image in `load_digits()`.
      1,437 train and 360 test examples, stratified by label, seed 0, sorted by id.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    train_ids, test_ids = train_test_split(
        ids, test_size=DIGITS_NUM_TEST, stratify=labels, random_state=DIGITS_SPLIT_SEED)
    out = {}
    for split, split_ids in (("train", np.sort(train_ids)), ("test", np.sort(test_ids))):
        out[split] = {"image": images[split_ids], "label": labels[split_ids], "id": split_ids}
    return out


def mnist1d_arrays() -> dict[str, dict[str, np.ndarray]]:
    """The MNIST-1D dataset (Greydanus 2020), generated offline by the `mnist1d` package.

    Uses `mnist1d.data.make_dataset(get_dataset_args())`: the package's canonical arguments
    (5,000 examples, train_split 0.8, seed 42), the ones its published pickle was made with;
    nothing is downloaded. The package seeds the global `random` / `np.random` state; that
    state is saved and restored around the call. Values may differ from the downloaded
    pickle in the last bits if numpy/scipy round differently.

    Returns:
      `{"train": {...}, "test": {...}}` with `x` float32 (n, 40), `label` int64 (n,) and
      `id` int64 (n,): the position in the package's arrays, train first (train ids
      0..3999, test ids 4000..4999).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    n_train = len(data["y"])
    return {
        "train": {"x": data["x"].astype(np.float32), "label": data["y"].astype(np.int64),
                  "id": np.arange(n_train, dtype=np.int64)},
        "test": {"x": data["x_test"].astype(np.float32),
                 "label": data["y_test"].astype(np.int64),
                 "id": n_train + np.arange(len(data["y_test"]), dtype=np.int64)},
    }


def photo_patch_arrays() -> dict[str, dict[str, np.ndarray]]:
    """Random 32x32 RGB crops of the two photographs shipped with scikit-learn.

    The photos are `sklearn.datasets.load_sample_images()` (china.jpg, flower.jpg; 427x640).
    Train crops lie entirely in the left 75% of each photo's columns (x < 480), test crops
    entirely in the right 25% (x >= 480), so no train and test crop share a pixel. Each
    photo gives half the crops of each split; positions come from `default_rng(0)`.
    scikit-image's photos are deliberately not used: the dataset must not depend on which
    optional packages a host has installed.

    Returns:
      `{"train": {...}, "test": {...}}` with `image` uint8 (n, 32, 32, 3) and `id` int64
      (n,): train ids 0..19,999, test ids 20,000..21,999.
    """
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(PATCH_SEED)
    out, next_id = {}, 0
    for split, n in (("train", PATCH_NUM_TRAIN), ("test", PATCH_NUM_TEST)):
        crops = []
        for k, photo in enumerate(photos):
            crops.append(_crops(photo, split, n // len(photos) + (k < n % len(photos)), rng))
        images = np.concatenate(crops).astype(np.uint8)
        out[split] = {"image": images, "id": next_id + np.arange(n, dtype=np.int64)}
        next_id += n
    return out


def _crops(photo: np.ndarray, split: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n random PATCH_SIZE crops of `photo` (h, w, 3): train crops entirely in the left
    PATCH_TRAIN_FRACTION of its columns, test crops entirely in the rest."""
    h, w, _ = photo.shape
    cut = int(w * PATCH_TRAIN_FRACTION)
    x_lo, x_hi = (0, cut - PATCH_SIZE) if split == "train" else (cut, w - PATCH_SIZE)
    ys = rng.integers(0, h - PATCH_SIZE + 1, size=n)
    xs = rng.integers(x_lo, x_hi + 1, size=n)
    windows = np.lib.stride_tricks.sliding_window_view(
        photo, (PATCH_SIZE, PATCH_SIZE), axis=(0, 1))  # (h', w', 3, size, size)
    return windows[ys, xs].transpose(0, 2, 3, 1)


def _labelled_photos() -> list[np.ndarray]:
    """The LABELLED_PHOTOS as (h, w, 3) uint8 arrays, in label order."""
    from sklearn.datasets import load_sample_images

    try:
        import skimage.data
    except ImportError as e:  # a declared dependency; only a broken install lacks it
        raise ImportError("labelled_photos needs scikit-image (a dependency of ssl_gen): "
                          "pip install scikit-image") from e
    sk = dict(zip(("china", "flower"), load_sample_images().images, strict=True))
    photos = []
    for name, origin in LABELLED_PHOTOS:
        if origin == "sklearn":
            photo = sk[name]
        else:
            photo = getattr(skimage.data, name)()
            photo = photo[0] if isinstance(photo, tuple) else photo  # stereo: the left view
        photos.append(np.ascontiguousarray(photo[..., :3], dtype=np.uint8))
    return photos


def labelled_photo_arrays() -> dict[str, dict[str, np.ndarray]]:
    """32x32 RGB crops of ten photographs, each labelled by its photograph (10 classes).

    The photographs are LABELLED_PHOTOS: scikit-learn's china.jpg and flower.jpg and eight
    photos bundled in scikit-image's wheel (astronaut, a cat, coffee, a rocket, the Hubble
    deep field, a retina, an immunohistochemistry slide, a motorcycle), at their native
    resolutions (300x451 to 1411x1411: a crop covers a different fraction of each). As in
    `photo_patch_arrays`, train crops lie in the left 75% of a photo's columns and test
    crops in the right 25%, so no train and test crop share a pixel and a classifier must
    generalize across regions of a photo, not recognize the crop. 1,000 train and 200 test
    crops per photo (10,000 / 2,000), positions from `default_rng(1)`, photo by photo.

    Returns:
      `{"train": {...}, "test": {...}}` with `image` uint8 (n, 32, 32, 3), `label` int64
      (n,) in 0..9 and `id` int64: train ids 0..9,999, test ids 10,000..11,999.
    """
    photos = _labelled_photos()
    rng = np.random.default_rng(LABELLED_SEED)
    out, next_id = {}, 0
    for split, per in (("train", LABELLED_NUM_TRAIN), ("test", LABELLED_NUM_TEST)):
        images = np.concatenate([_crops(p, split, per, rng) for p in photos]).astype(np.uint8)
        n = len(images)
        out[split] = {"image": images,
                      "label": np.repeat(np.arange(len(photos), dtype=np.int64), per),
                      "id": next_id + np.arange(n, dtype=np.int64)}
        next_id += n
    return out


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared plumbing: array_record by default, splits generated from in-memory arrays."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _arrays(self) -> dict[str, dict[str, np.ndarray]]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(arrays)
                for split, arrays in self._arrays().items()}

    def _generate_examples(self, arrays):
        for i, example_id in enumerate(arrays["id"]):
            yield int(example_id), {k: v[i] for k, v in arrays.items()}


def _digit_features(**extra) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8, encoding="bytes"),
        "label": tfds.features.ClassLabel(num_classes=10),
        "id": tfds.features.Scalar(dtype=np.int64),
        **extra,
    })


class Digits(_EmbeddedBuilder):
    """scikit-learn's 1,797 8x8 handwritten digits, 17 grey levels (0..16), 10 classes."""

    name = "digits"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=("scikit-learn's load_digits (UCI optical digits, 8x8, grey levels "
                         "0..16); fixed stratified split, 1,437 train / 360 test, seed 0. "
                         "`id` is the row in load_digits()."),
            features=_digit_features(),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _arrays(self):
        return digits_arrays()


class DigitsBinarized(_EmbeddedBuilder):
    """`digits` thresholded (pixel >= 8 -> 1), with the grey levels kept in `grey`.

    `image` is the fixed binarization; `grey` (0..16) lets the input pipeline resample
    Bernoulli(grey / 16) bits every epoch (dynamic binarization).
    """

    name = "digits_binarized"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=("The digits dataset, image thresholded at grey level 8 (of 0..16) "
                         "to {0, 1}; `grey` keeps the 0..16 levels for dynamic binarization."),
            features=_digit_features(
                grey=tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8, encoding="bytes")),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _arrays(self):
        out = digits_arrays()
        for arrays in out.values():
            arrays["grey"] = arrays["image"]
            arrays["image"] = (arrays["grey"] >= DIGITS_THRESHOLD).astype(np.uint8)
        return out


class Mnist1d(_EmbeddedBuilder):
    """MNIST-1D: 1-D digit signals of length 40, 10 classes, 4,000 train / 1,000 test."""

    name = "mnist1d"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=("MNIST-1D (Greydanus 2020), generated offline by the mnist1d "
                         "package with its canonical arguments and seed 42."),
            features=tfds.features.FeaturesDict({
                "x": tfds.features.Tensor(shape=(40,), dtype=np.float32, encoding="bytes"),
                "label": tfds.features.ClassLabel(num_classes=10),
                "id": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("x", "label"),
            homepage="https://github.com/greydanus/mnist1d",
            citation=("@article{greydanus2020scaling, title={Scaling down deep learning}, "
                      "author={Greydanus, Sam}, journal={arXiv:2011.14439}, year={2020}}"),
        )

    def _arrays(self):
        return mnist1d_arrays()


class PhotoPatches(_EmbeddedBuilder):
    """32x32 RGB crops of scikit-learn's sample photos; train/test from disjoint regions."""

    name = "photo_patches"

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Random 32x32 crops of sklearn's china.jpg and flower.jpg; train "
                         "crops from the left 75% of columns, test crops from the right "
                         "25%; 20,000 train / 2,000 test, seed 0."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(PATCH_SIZE, PATCH_SIZE, 3),
                                              dtype=np.uint8, encoding="bytes"),
                "id": tfds.features.Scalar(dtype=np.int64),
            }),
            homepage="https://scikit-learn.org/stable/datasets/loading_other_datasets.html",
        )

    def _arrays(self):
        return photo_patch_arrays()


class LabelledPhotos(_EmbeddedBuilder):
    """32x32 RGB crops of ten photographs, labelled by photograph; disjoint train/test regions."""

    name = "labelled_photos"

    def _info(self):
        names = [name for name, _ in LABELLED_PHOTOS]
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Random 32x32 crops of ten colour photographs shipped in the "
                         "scikit-learn and scikit-image wheels, labelled by photograph "
                         f"({', '.join(names)}); train crops from the left 75% of columns, "
                         "test crops from the right 25%; 1,000 / 200 crops per photo, seed 1."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(PATCH_SIZE, PATCH_SIZE, 3),
                                              dtype=np.uint8, encoding="bytes"),
                "label": tfds.features.ClassLabel(names=names),
                "id": tfds.features.Scalar(dtype=np.int64),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _arrays(self):
        return labelled_photo_arrays()


BUILDERS: dict[str, type[_EmbeddedBuilder]] = {
    cls.name: cls for cls in (Digits, DigitsBinarized, Mnist1d, PhotoPatches, LabelledPhotos)}
