"""Datasets by name: random-access sources, cheap existence checks, and shape metadata.

Why: the trainer must fail at start, in one line, when a dataset is missing (before anything
compiles), must never download at run time, and must configure models from the data's
shapes. Embedded datasets (`EMBEDDED_DATASETS`) are built on first use from packages we
depend on; any other tfds dataset is read only if it is already prepared in the data dir.

Ordering: tfds shuffles records on write (deterministically), so a split's file order is
stable but arbitrary. Embedded splits are loaded whole into memory (`InMemorySource`, a few
MB) and sorted by their `id` field, so `source[i]` is the i-th smallest id and the order does
not depend on tfds' shuffling. Other datasets keep tfds' (stable) file order unless loaded
in memory, where they are sorted by `id` if they have one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import constants, read_only_builder, registered

from ssl_gen.data import builders
from ssl_gen.errors import UserError

EMBEDDED_DATASETS: tuple[str, ...] = tuple(builders.BUILDERS)


class DatasetNotFoundError(UserError, registered.DatasetNotFoundError):
    """A dataset is neither embedded nor prepared (in a readable format) in the data dir.

    A `ValueError` (through tfds' own `DatasetNotFoundError`); its message is one line.
    """


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset, without reading it.

    Attributes:
      name: the dataset name.
      features: field -> (shape of one example, numpy dtype name), top-level fields only.
      splits: split name -> number of examples.
      input_key: the field models consume ("image" or "x"), or None.
      num_classes: number of classes of `label`, or None when unlabelled.
      grey_levels: number of distinct values an input element takes (17 for digits, 2 for
        binarized data, 256 for uint8 photos), or None for continuous inputs.
    """

    name: str
    features: Mapping[str, tuple[tuple[int, ...], str]]
    splits: Mapping[str, int]
    input_key: str | None
    num_classes: int | None
    grey_levels: int | None


_DIGITS_FEATURES = {"image": ((8, 8, 1), "uint8"), "label": ((), "int64"), "id": ((), "int64")}
_DIGITS_SPLITS = {"train": 1437, "test": 360}
_EMBEDDED_SPECS = {
    "digits": DatasetSpec("digits", _DIGITS_FEATURES, _DIGITS_SPLITS, "image", 10,
                          builders.DIGITS_MAX_LEVEL + 1),
    "digits_binarized": DatasetSpec(
        "digits_binarized", {**_DIGITS_FEATURES, "grey": ((8, 8, 1), "uint8")},
        _DIGITS_SPLITS, "image", 10, 2),
    "mnist1d": DatasetSpec(
        "mnist1d", {"x": ((40,), "float32"), "label": ((), "int64"), "id": ((), "int64")},
        {"train": 4000, "test": 1000}, "x", 10, None),
    "photo_patches": DatasetSpec(
        "photo_patches",
        {"image": ((builders.PATCH_SIZE, builders.PATCH_SIZE, 3), "uint8"),
         "id": ((), "int64")},
        {"train": builders.PATCH_NUM_TRAIN, "test": builders.PATCH_NUM_TEST}, "image", None,
        256),
    "labelled_photos": DatasetSpec(
        "labelled_photos",
        {"image": ((builders.PATCH_SIZE, builders.PATCH_SIZE, 3), "uint8"),
         "label": ((), "int64"), "id": ((), "int64")},
        {"train": builders.LABELLED_NUM_TRAIN * len(builders.LABELLED_PHOTOS),
         "test": builders.LABELLED_NUM_TEST * len(builders.LABELLED_PHOTOS)}, "image",
        len(builders.LABELLED_PHOTOS), 256),
}
# Grey levels of well-known tfds datasets whose dtype alone does not tell.
_KNOWN_GREY_LEVELS = {"binarized_mnist": 2}


class InMemorySource:
    """A whole split as numpy arrays: random access by fancy indexing, no per-example cost.

    `source[i]` is a dict of arrays for example i; `get_batch(indices)` gathers a batch as a
    dict of stacked arrays (what `InputPipeline` uses). The arrays are read-only.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        """Wraps equal-length arrays.

        Args:
          arrays: field -> array whose leading axis indexes examples.
        """
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"InMemorySource: fields have different lengths: {lengths}")
        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for v in self._arrays.values():
            v.flags.writeable = False
        self._len = next(iter(lengths.values()))

    @classmethod
    def from_source(cls, source: Sequence[Mapping[str, Any]],
                    sort_by: str | None = "id") -> InMemorySource:
        """Reads every example of a random-access source into memory.

        Args:
          source: a sequence of flat dicts (e.g. a `tfds.data_source`).
          sort_by: a field to sort examples by when present (None keeps the source order).

        Returns:
          The in-memory source.
        """
        indices = list(range(len(source)))
        if hasattr(source, "__getitems__"):
            records = source.__getitems__(indices)
        else:
            records = [source[i] for i in indices]
        if not records:
            raise ValueError("InMemorySource.from_source: the source is empty")
        arrays = {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
        if sort_by is not None and sort_by in arrays:
            order = np.argsort(arrays[sort_by], kind="stable")
            arrays = {k: v[order] for k, v in arrays.items()}
        return cls(arrays)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The read-only arrays, field -> (len, ...)."""
        return self._arrays

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not -self._len <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} examples")
        return {k: v[index] for k, v in self._arrays.items()}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self[int(i)] for i in indices]

    def get_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Gathers examples `indices` as a dict of arrays with a leading batch axis."""
        return {k: v[indices] for k, v in self._arrays.items()}


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    if data_dir is None:
        data_dir = constants.get_default_data_dir()  # $TFDS_DATA_DIR or ~/tensorflow_datasets
    return os.path.expanduser(os.fspath(data_dir))


def _split_names(split: str) -> list[str]:
    """Base split names in a tfds split string: 'train[:10%]+test' -> ['train', 'test']."""
    return [part.split("[")[0].strip() for part in str(split).split("+")]


def _check_split(name: str, split: str, available: Sequence[str]) -> None:
    for base in _split_names(split):
        if base not in available:
            raise ValueError(f"unknown split {base!r} for dataset {name!r}; "
                             f"available: {', '.join(available)}")


def _not_found(name: str, data_dir: str, why: str = "is not prepared") -> DatasetNotFoundError:
    near = difflib.get_close_matches(name, EMBEDDED_DATASETS, n=1, cutoff=0.75)
    if near and name.split("/")[0].split(":")[0] not in tfds.list_builders(
            with_community_datasets=False):  # a typo of an embedded name, not a tfds one
        return DatasetNotFoundError(
            f"dataset {name!r} {why} in {data_dir}; did you mean the embedded {near[0]!r}? "
            f"(embedded: {', '.join(EMBEDDED_DATASETS)})")
    return DatasetNotFoundError(
        f"dataset {name!r} {why} in {data_dir} (nothing is downloaded at run time): prepare "
        f"it once where there is network, with `tfds build {name} --data_dir={data_dir} "
        f"--file_format=array_record` or `tfds.builder({name!r}, data_dir={data_dir!r})"
        f".download_and_prepare(file_format='array_record')`, or use an embedded dataset: "
        f"{', '.join(EMBEDDED_DATASETS)}")


def _prepared_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The read-only builder of a prepared, array_record non-embedded dataset."""
    try:
        builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
    except (registered.DatasetNotFoundError, FileNotFoundError):
        raise _not_found(name, data_dir) from None
    except ValueError:  # tfds could not parse the name (its message has several lines)
        raise DatasetNotFoundError(
            f"{name!r} is not a dataset name (expected name[/config][:version]); embedded "
            f"datasets: {', '.join(EMBEDDED_DATASETS)}") from None
    formats = {f.value for f in builder.info.available_file_formats()}
    if "array_record" not in formats:
        raise _not_found(name, data_dir, f"is prepared only as {'/'.join(sorted(formats))} "
                                         "(random access needs array_record)")
    return builder


def check_dataset(name: str, split: str, data_dir: str | os.PathLike | None = None) -> None:
    """Raises a one-line error if `name`/`split` cannot be read, without reading any data.

    Embedded datasets always pass (they are built on first use); other tfds datasets must be
    prepared in `data_dir` in the array_record format.

    Args:
      name: an embedded dataset name or any tfds name (`name[/config][:version]`).
      split: a tfds split string ('train', 'test[:10%]', ...).
      data_dir: the tfds data dir; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Raises:
      DatasetNotFoundError: the dataset is not embedded and not prepared.
      ValueError: the split does not exist.
    """
    if name in _EMBEDDED_SPECS:
        _check_split(name, split, list(_EMBEDDED_SPECS[name].splits))
        return
    builder = _prepared_builder(name, _resolve_data_dir(data_dir))
    _check_split(name, split, list(builder.info.splits))


@contextlib.contextmanager
def _build_lock(data_dir: str) -> Iterator[None]:
    """Serializes builds of several processes sharing a local data dir (no-op remotely)."""
    if "://" in data_dir:
        yield
        return
    import fcntl

    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, ".ssl_gen_build.lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare_embedded(name: str, data_dir: str | os.PathLike | None = None
                     ) -> tfds.core.DatasetBuilder:
    """Builds an embedded dataset into `data_dir` unless it is already there.

    Args:
      name: one of `EMBEDDED_DATASETS`.
      data_dir: the tfds data dir; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      The prepared builder (reading needs no TensorFlow).
    """
    if name not in builders.BUILDERS:
        raise ValueError(f"{name!r} is not embedded; embedded: {', '.join(EMBEDDED_DATASETS)}")
    data_dir = _resolve_data_dir(data_dir)
    builder = builders.BUILDERS[name](data_dir=data_dir)
    if not _is_prepared(builder):
        with _build_lock(data_dir):
            builder = builders.BUILDERS[name](data_dir=data_dir)  # another process may have built
            if not _is_prepared(builder):
                print(f"ssl_gen: building the embedded dataset {name!r} into {data_dir} "
                      "(once; later runs reuse it)", flush=True)
                with _quiet_tfds():
                    builder.download_and_prepare()
    return builder


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """tfds' per-split progress bars are noise for builds that take a second or two."""
    tfds.disable_progress_bar()
    try:
        yield
    finally:
        tfds.enable_progress_bar()


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    # What `builder.is_prepared()` checks, without its warning when the folder is missing.
    return (builder.data_path / "dataset_info.json").exists()


def get_source(name: str, split: str, data_dir: str | os.PathLike | None = None, *,
               in_memory: bool | None = None) -> Sequence[dict[str, np.ndarray]]:
    """A random-access source over one split: `len(source)`, `source[i] -> dict of arrays`.

    Embedded datasets are built on first use (seconds) and reused afterwards. Other tfds
    datasets are opened with `as_data_source` only if already prepared; nothing is downloaded.

    Args:
      name: an embedded dataset name or any tfds name (`name[/config][:version]`).
      split: a tfds split string ('train', 'test', 'train[:90%]', ...).
      data_dir: the tfds data dir; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.
      in_memory: load the whole split as numpy arrays (`InMemorySource`, sorted by `id`).
        Default: True for embedded datasets, False for others (tfds' data source, file order).

    Returns:
      The source.

    Raises:
      DatasetNotFoundError: the dataset is not embedded and not prepared.
      ValueError: the split does not exist.
    """
    check_dataset(name, split, data_dir)
    data_dir = _resolve_data_dir(data_dir)
    if name in _EMBEDDED_SPECS:
        source = prepare_embedded(name, data_dir).as_data_source(split=split)
        in_memory = True if in_memory is None else in_memory
    else:
        source = _prepared_builder(name, data_dir).as_data_source(split=split)
    return InMemorySource.from_source(source) if in_memory else source


def _spec_from_info(name: str, info: tfds.core.DatasetInfo) -> DatasetSpec:
    features, num_classes = {}, None
    for key, feature in info.features.items():
        if isinstance(feature.shape, tuple):
            features[key] = (tuple(feature.shape), np.dtype(feature.np_dtype).name)
        if key == "label" and isinstance(feature, tfds.features.ClassLabel):
            num_classes = feature.num_classes
    input_key = next((k for k in ("image", "x") if k in features), None)
    base = name.split("/")[0].split(":")[0]
    grey_levels = _KNOWN_GREY_LEVELS.get(base)
    if grey_levels is None and input_key and features[input_key][1] == "uint8":
        grey_levels = 256
    splits = {k: v.num_examples for k, v in info.splits.items()}
    return DatasetSpec(name, features, splits, input_key, num_classes, grey_levels)


def dataset_info(name: str, data_dir: str | os.PathLike | None = None) -> DatasetSpec:
    """Shapes, dtypes, split sizes, classes and grey levels of a dataset, without reading it.

    Args:
      name: an embedded dataset name (answered without building) or a prepared tfds name.
      data_dir: the tfds data dir; default `$TFDS_DATA_DIR` or `~/tensorflow_datasets`.

    Returns:
      The dataset's `DatasetSpec`.

    Raises:
      DatasetNotFoundError: the dataset is not embedded and not prepared.
    """
    if name in _EMBEDDED_SPECS:
        return _EMBEDDED_SPECS[name]
    data_dir = _resolve_data_dir(data_dir)
    return _spec_from_info(name, _prepared_builder(name, data_dir).info)
