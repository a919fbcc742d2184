r"""Few-shot accuracy: closed-form ridge regression on n labelled examples per class.

The protocol of big_vision's `evaluators/fewshot_lsr.py` (Kolesnikov et al. 2020, "Big
Transfer"; Dosovitskiy et al. 2021 report ViT's few-shot numbers with it): for each seed,
each class's training examples are permuted by `numpy.random.default_rng(seed)` and the
first `shots` of each class form the support set X (N = shots * C rows). Features are
whitened with the support set's own mean and standard deviation (+1e-5), a constant
feature 100 is appended (a bias that the ridge penalty barely touches), and targets are
one-hot in {-1, +1}, Y (N, C). The weights are the ridge solution

    W = (X^T X + l2 I)^{-1} X^T Y         (primal, N >= D)
      = X^T (X X^T + l2 I)^{-1} Y         (dual, D > N: the same W, an N x N solve)

with l2 = `l2_reg` (big_vision's configs: 2^10 = 1024), and the prediction on a test
feature x is argmax_c (x W)_c. Reported: the accuracy on the eval split, averaged over
`seeds` (big_vision logs each seed; the mean is what one reads off its plots), as
`fewshot{n}_acc`, next to the same on raw pixels and on the randomly initialized encoder
(`fewshot{n}_acc_pixels`, `fewshot{n}_acc_random_init`; `ssl_gen.evals.representation`).
"""

from __future__ import annotations

import numpy as np

from ssl_gen.evals import representation as rep

BIAS_CONSTANT = 100.0
DEFAULT_SHOTS = (1, 5, 10, 25)


def ridge_accuracy(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   l2_reg: float) -> float:
    """Accuracy on (x_test, y_test) of the whitened ridge regressor fitted on (x, y).

    Args:
      x: (N, D) support features. y: (N, C) one-hot targets in {-1, +1}.
      x_test: (M, D). y_test: (M,) int labels.
      l2_reg: the ridge penalty.

    In float64 NumPy (big_vision, too, solves on the host CPU): the systems are at most
    D x D or N x N, and nothing compiles per shot count.
    """
    x, x_test, y = (np.asarray(a, np.float64) for a in (x, x_test, y))
    mean = x.mean(0, keepdims=True)
    std = x.std(0, keepdims=True) + 1e-5
    prep = lambda a: np.pad((a - mean) / std, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)
    xs, xt = prep(x), prep(x_test)
    n, d = xs.shape
    if n >= d:  # (D, D) system
        w = np.linalg.solve(xs.T @ xs + l2_reg * np.eye(d), xs.T @ y)
    else:  # (N, N) system
        w = xs.T @ np.linalg.solve(xs @ xs.T + l2_reg * np.eye(n), y)
    return float(np.mean(np.argmax(xt @ w, axis=1) == y_test))


def support_indices(labels: np.ndarray, shots: int, num_classes: int, seed: int) -> np.ndarray:
    """The support set: for each class in order, the first `shots` of its examples after a
    `default_rng(seed)` permutation (big_vision's draw). ValueError if a class has fewer."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < shots:
            raise ValueError(f"few_shot: class {c} has {len(idx)} training examples, fewer "
                             f"than shots={shots}; lower the shots or read more examples "
                             "(num_train)")
        out.append(idx[:shots])
    return np.concatenate(out)


def few_shot_accuracy(train: rep.Split, test: rep.Split, shots: int, *, num_classes: int,
                      l2_reg: float = 1024.0, seeds=(0, 1, 2)) -> float:
    """Mean over `seeds` of the ridge accuracy with `shots` examples per class."""
    accs = []
    for seed in seeds:
        idx = support_indices(train.y, shots, num_classes, seed)
        onehot = 2.0 * np.eye(num_classes, dtype=np.float32)[train.y[idx]] - 1.0
        accs.append(ridge_accuracy(train.x[idx], onehot, test.x, test.y, float(l2_reg)))
    return float(np.mean(accs))


def evaluate(state, ctx, *, shots=DEFAULT_SHOTS, l2_reg: float = 1024.0, seeds=(0, 1, 2),
             field: str = "image", label_field: str = "label", num_train: int | None = None,
             num_test: int | None = None, batch_size: int = 256, baselines: bool = True,
             prefix: str = "") -> dict[str, float]:
    """`fewshot{n}_acc` for each n in `shots`, with its `_pixels` and `_random_init`
    baselines (module docstring).

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      shots: examples per class in the support set.
      l2_reg: the ridge penalty (big_vision: 1024).
      seeds: support-set draws averaged over.
      field, label_field: the dataset's input and label fields.
      num_train, num_test: examples read from each split (None: all).
      batch_size: the feature-extraction batch size.
      baselines: also report the raw-pixel and random-init baselines.
      prefix: prepended to every metric name.
    """
    if not shots or any(int(s) < 1 for s in shots):
        raise ValueError(f"few_shot: shots must be ints >= 1, got {shots!r}")
    sets = rep.feature_sets(state, ctx, field=field, label_field=label_field,
                            num_train=num_train, num_test=num_test, batch_size=batch_size,
                            baselines=baselines, who="few_shot")
    c = rep.num_classes(sets)
    out = {}
    for suffix, fs in sets.items():
        for n in shots:
            out[f"{prefix}fewshot{int(n)}_acc{suffix}"] = few_shot_accuracy(
                fs.train, fs.test, int(n), num_classes=c, l2_reg=l2_reg, seeds=tuple(seeds))
    return out
