"""From `config.dataset` to a run's inputs, in one call: `build_inputs` and `check_config`.

```python
data.check_config(config.dataset)           # ValueError, one line, before anything is read
inputs = data.build_inputs(config.dataset, batch_size=128, seed=0)
next(inputs.pipeline)                       # this host's part of a training batch
inputs.eval_source, inputs.train_source     # what evaluations read (deterministic ops)
inputs.example                              # a local training batch: shapes and dtypes
```

`config.dataset` keys: `name`, `data_dir`, `train_split` ("train"), `eval_split` ("test"),
`preprocess` (ops applied to training batches, `ssl_gen.data.preprocess`), `eval_preprocess`
(ops for what evaluations read; default: the deterministic forms of `preprocess`'s ops),
`num_workers` (grain worker processes for the training batches; 0: none).

Older spellings are mapped onto a `binarize` op: `dynamic_binarization` (bool), `grey_max`
(int, 16 by default) and `binarize_eval` (None, "bernoulli", "threshold") mean
`{"name": "binarize", "mode": "dynamic" if dynamic_binarization else None,
"grey_max": grey_max, "eval": binarize_eval}` placed first; they cannot be mixed with a
`binarize` op in `preprocess`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from ssl_gen.data import preprocess as pp
from ssl_gen.data.pipeline import InputPipeline, PreprocessedSource
from ssl_gen.data.sources import check_dataset, get_source

DATASET_KEYS = ("name", "data_dir", "train_split", "eval_split", "preprocess",
                "eval_preprocess", "num_workers")
LEGACY_KEYS = ("dynamic_binarization", "grey_max", "binarize_eval")
# The seeds of the fixed (evaluation) forms: one per split, so that a fixed Bernoulli sample
# of the training examples evaluations read is unrelated to the eval split's.
EVAL_SEED, TRAIN_EVAL_SEED = 0, 1


class Inputs(NamedTuple):
    """What a training run reads.

    Attributes:
      pipeline: the training batches (this host's part), resumable (`get_state`).
      train_source: the training split as evaluations read it (the eval ops applied).
      eval_source: the eval split as evaluations read it.
      example: the first local training batch (shapes, dtypes), read without moving
        `pipeline`.
      train_ops: the parsed training ops.
      eval_ops: the parsed evaluation ops.
    """

    pipeline: InputPipeline
    train_source: Sequence[Mapping[str, Any]]
    eval_source: Sequence[Mapping[str, Any]]
    example: dict
    train_ops: tuple[pp.Op, ...]
    eval_ops: tuple[pp.Op, ...]


def _get(ds, key, default=None):
    value = ds.get(key, default) if hasattr(ds, "get") else default
    return default if value is None else value


def _legacy_op(ds) -> dict | None:
    """The binarize op the old keys spell, or None; ValueError on a bad old value."""
    if not any(ds.get(k) not in (None, False, "") for k in LEGACY_KEYS):
        return None
    grey_max = ds.get("grey_max")
    if grey_max is not None and not (isinstance(grey_max, int) and not isinstance(grey_max, bool)
                                     and grey_max >= 1):
        raise ValueError(f"config.dataset.grey_max={grey_max!r} must be an int >= 1 (the grey "
                         "level meaning probability 1: 16 for digits, 255 for mnist)")
    mode = ds.get("binarize_eval")
    if mode not in (None, "", *pp.BINARIZE_MODES):
        raise ValueError(f"config.dataset.binarize_eval={mode!r} must be None, "
                         f"{' or '.join(repr(m) for m in pp.BINARIZE_MODES)}")
    dynamic = ds.get("dynamic_binarization")
    if dynamic not in (None, True, False):
        raise ValueError(f"config.dataset.dynamic_binarization={dynamic!r} must be True or False")
    return {"name": "binarize", "mode": "dynamic" if dynamic else None,
            "grey_max": grey_max or 16, "eval": mode or None}


def _ops(ds) -> tuple[tuple[pp.Op, ...], tuple[pp.Op, ...]]:
    """(training ops, evaluation ops) of a dataset config."""
    train = pp.parse(_get(ds, "preprocess", ()), "config.dataset.preprocess")
    legacy = _legacy_op(ds)
    if legacy is not None:
        if any(op.name == "binarize" for op in train):
            raise ValueError("config.dataset: dynamic_binarization / grey_max / binarize_eval "
                             "and a 'binarize' op in preprocess say the same thing twice; "
                             "keep the op")
        train = pp.parse([legacy], "config.dataset (dynamic_binarization, grey_max, "
                                   "binarize_eval)") + train
    if ds.get("eval_preprocess") is not None:
        evals = pp.parse(ds.get("eval_preprocess"), "config.dataset.eval_preprocess")
    else:
        evals = tuple(op for op in train if op.in_eval)
    return train, evals


def check_config(ds) -> None:
    """Checks a `config.dataset` without reading any data.

    Raises:
      ValueError: one line naming the key, the op or the argument that is wrong.
    """
    for k in ds:
        if k not in DATASET_KEYS + LEGACY_KEYS:
            near = difflib.get_close_matches(k, DATASET_KEYS + LEGACY_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {sorted(DATASET_KEYS)}"
            raise ValueError(f"config.dataset: unknown key {k!r}{hint}")
    if "name" not in ds:
        raise ValueError("config.dataset: missing key 'name'")
    workers = _get(ds, "num_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"config.dataset.num_workers={workers!r} must be an int >= 0")
    _ops(ds)


def build_inputs(ds, *, batch_size: int, seed: int, process_index: int | None = None,
                 process_count: int | None = None) -> Inputs:
    """Checks `config.dataset`, opens both splits and builds the training pipeline.

    Args:
      ds: `config.dataset` (a ConfigDict or a dict).
      batch_size: the global training batch size.
      seed: the run's seed (the epoch permutations, the training ops' randomness).
      process_index: this host's index (default `jax.process_index()`).
      process_count: number of hosts (default `jax.process_count()`).

    Returns:
      the `Inputs`.

    Raises:
      ValueError: a bad config value or batch size (one line).
      DatasetNotFoundError: the dataset is not embedded and not prepared (one line).
    """
    check_config(ds)
    train_ops, eval_ops = _ops(ds)
    name, data_dir = ds["name"], ds.get("data_dir")
    splits = (_get(ds, "train_split", "train"), _get(ds, "eval_split", "test"))
    for split in splits:
        check_dataset(name, split, data_dir)
    train, evaluation = (get_source(name, split, data_dir) for split in splits)
    pipeline = InputPipeline(train, global_batch_size=batch_size, seed=seed,
                             process_index=process_index, process_count=process_count,
                             preprocess=train_ops, num_workers=_get(ds, "num_workers", 0))
    example = pipeline.dataset[0]
    if eval_ops:
        train = PreprocessedSource(train, eval_ops, seed=TRAIN_EVAL_SEED)
        evaluation = PreprocessedSource(evaluation, eval_ops, seed=EVAL_SEED)
    return Inputs(pipeline, train, evaluation, example, train_ops, eval_ops)
