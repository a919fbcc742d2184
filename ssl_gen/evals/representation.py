"""What every representation probe shares: frozen features and the two baselines beside them.

`linear_probe`, `knn` and `few_shot` all score a representation the same way: features of
the training split fit a probe, features of the eval split test it. A number alone says
little, so each probe is run, in the same call and by the same code, on three feature sets
(`feature_sets`), whose metric names differ only by a suffix:

| suffix          | features                                                             |
|-----------------|----------------------------------------------------------------------|
| ""              | `model.features(x)` on the trained (frozen) weights                  |
| "_pixels"       | the flattened input, float32: what the probe reaches with no model   |
| "_random_init"  | `model.features(x)` on `model.init` from a fixed seed: the architecture's |
|                 | inductive bias alone (random ViT features are far from useless)      |

Features come from the `FeatureExtractor` protocol (`ssl_gen.models.protocols`):
`model.apply(variables, x, method=model.features) -> (B, D)`, in eval mode, computed in
fixed-size jitted batches (the last one padded, so one compile per feature set). Inputs are
read from the trainer's host sources (`ctx.train_source`, `ctx.eval_source`: the evaluation
form of `config.dataset.preprocess`, e.g. the same normalization the model trains on), the
first `num_train` / `num_test` examples of each, identical on every host. The two
baselines do not depend on the training state: they are computed once per run (model,
sources and sizes) and reused by every later call and by the other probes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen.evals.context import model_variables
from ssl_gen.models import protocols

SUFFIXES = ("", "_pixels", "_random_init")
RANDOM_INIT_SEED = 0  # the fixed seed of the randomly initialized baseline


class Split(NamedTuple):
    """Features and labels of one split: x (N, D) float32, y (N,) int32."""

    x: np.ndarray
    y: np.ndarray


class FeatureSet(NamedTuple):
    train: Split
    test: Split


def read(source, n: int | None, fields: Sequence[str]) -> dict[str, np.ndarray]:
    """The first `n` examples (all when None) of a random-access source, as stacked arrays."""
    n = len(source) if n is None else min(int(n), len(source))
    if n < 1:
        raise ValueError("representation probes need a non-empty split")
    idx = np.arange(n)
    if hasattr(source, "get_batch"):
        batch = source.get_batch(idx)
    else:
        records = [source[int(i)] for i in idx]
        batch = {k: np.stack([np.asarray(r[k]) for r in records]) for k in fields}
    missing = [f for f in fields if f not in batch]
    if missing:
        raise ValueError(f"representation probes: the dataset has no field {missing[0]!r} "
                         f"(its fields: {', '.join(sorted(batch))}); set the eval's "
                         "field / label_field kwargs")
    return {k: np.asarray(batch[k]) for k in fields}


def check_model(model, who: str) -> None:
    if not isinstance(model, protocols.FeatureExtractor):
        raise TypeError(f"{who}: {type(model).__name__} has no features(x) (the "
                        "FeatureExtractor protocol, ssl_gen.models.protocols)")


def extract(model, variables, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """`model.features` of inputs x (N, ...) on `variables`, as float32 (N, D).

    Fixed-size batches (the last padded with copies of the first example) so the jitted
    function compiles once per (model, shape)."""
    fn = functools.partial(_features, model=model)
    n = len(x)
    b = min(batch_size, n)
    out = []
    for start in range(0, n, b):
        chunk = x[start:start + b]
        real = len(chunk)
        if real < b:
            chunk = np.concatenate([chunk, np.repeat(x[:1], b - real, axis=0)])
        out.append(np.asarray(jax.device_get(fn(variables, jnp.asarray(chunk))))[:real])
    feats = np.concatenate(out).astype(np.float32)
    return feats.reshape(n, -1)


@functools.partial(jax.jit, static_argnames=("model",))
def _features(variables, x, *, model):
    return model.apply(variables, x, method=model.features)


def random_init_variables(model, example: np.ndarray, seed: int = RANDOM_INIT_SEED):
    """`model.init` from a fixed seed, for the randomly initialized baseline.

    Every rng stream a model may ask for at init (params, dropout, sample, masking) gets a
    key derived from `seed`, so the baseline is the same at every step and in every run."""
    key = jax.random.key(seed)
    rngs = {name: jax.random.fold_in(key, i)
            for i, name in enumerate(("params", "dropout", "sample", "masking"))}
    return jax.jit(model.init)(rngs, jnp.asarray(example[:1]))


def feature_sets(state, ctx, *, field: str = "image", label_field: str = "label",
                 num_train: int | None = None, num_test: int | None = None,
                 batch_size: int = 256, baselines: bool = True,
                 who: str = "representation") -> dict[str, FeatureSet]:
    """suffix -> the train/test features and labels of each feature set (module docstring).

    Args:
      state: the train state (its model variables give the main set).
      ctx: the trainer's `EvalContext` (model, train_source, eval_source).
      field, label_field: the input and label fields of the dataset.
      num_train, num_test: examples read from each split (None: all).
      batch_size: the feature batch size.
      baselines: also the "_pixels" and "_random_init" sets (False: only "").
    """
    model = ctx.model
    check_model(model, who)
    tr = read(ctx.train_source, num_train, (field, label_field))
    te = read(ctx.eval_source, num_test, (field, label_field))
    ys = (tr[label_field].astype(np.int32), te[label_field].astype(np.int32))

    def make(fn) -> FeatureSet:
        return FeatureSet(Split(fn(tr[field]), ys[0]), Split(fn(te[field]), ys[1]))

    variables = model_variables(state)
    out = {"": make(lambda x: extract(model, variables, x, batch_size=batch_size))}
    if baselines:
        key = (model, len(tr[field]), len(te[field]), field, label_field, batch_size)
        hit = _BASELINES.get(key)
        if hit is None or hit[0] is not ctx.train_source or hit[1] is not ctx.eval_source:
            rand = random_init_variables(model, tr[field])
            sets = {"_pixels": make(lambda x: np.asarray(x, np.float32).reshape(len(x), -1)),
                    "_random_init": make(lambda x: extract(model, rand, x,
                                                           batch_size=batch_size))}
            while len(_BASELINES) >= _CACHE_SIZE:
                _BASELINES.pop(next(iter(_BASELINES)))
            hit = _BASELINES[key] = (ctx.train_source, ctx.eval_source, sets)
        out.update(hit[2])
    return out


# The baselines do not change during a run: computed once per (model, sources, sizes) and
# kept, with the sources themselves (so a new source of the same size is a miss).
_BASELINES: dict = {}
_CACHE_SIZE = 4


def num_classes(sets: Mapping[str, FeatureSet]) -> int:
    """The number of classes: one more than the largest label in either split."""
    fs = next(iter(sets.values()))
    return int(max(fs.train.y.max(), fs.test.y.max())) + 1


def standardize(train: np.ndarray, *others: np.ndarray, eps: float = 1e-6):
    """Each feature centred and scaled by the training rows' mean and variance."""
    mean = train.mean(0, keepdims=True)
    scale = 1.0 / np.sqrt(train.var(0, keepdims=True) + eps)
    return tuple(((a - mean) * scale).astype(np.float32) for a in (train, *others))
