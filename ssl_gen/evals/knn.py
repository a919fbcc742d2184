r"""k-nearest-neighbour accuracy on frozen features: cosine similarity, weighted votes.

The weighted kNN of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", Sec. 3.4) as DINO runs it (Caron et al. 2021, `eval_knn.py`:
k = 20, T = 0.07; it also reports k = 10, 100, 200). Train and test features are L2
normalized; for a test feature q, its k most similar training features (cosine s_i =
q . x_i) vote for their labels with weight exp(s_i / T), and the class with the largest
summed weight is the prediction. No training, no hyperparameter besides k and T: it shows
whether the representation's geometry already separates the classes.

Reported: `knn{k}_acc` for each k in `ks`, with `_pixels` and `_random_init` baselines
measured the same way in the same call (`ssl_gen.evals.representation`).
"""

from __future__ import annotations

import numpy as np

from ssl_gen.evals import representation as rep


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, k: int,
                num_classes: int, temperature: float) -> np.ndarray:
    """Predicted labels (M,) of test_x (M, D) by temperature-weighted cosine kNN over
    (train_x (N, D), train_y (N,)); ties in the vote go to the smaller class."""
    sim = _unit(test_x) @ _unit(train_x).T  # (M, N)
    k = min(k, sim.shape[1])
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]  # (M, k): the k most similar
    top = np.take_along_axis(sim, idx, axis=1)
    weights = np.exp((top - 1.0) / temperature)  # exp(s / T), scaled by exp(-1 / T): s <= 1
    votes = np.zeros((len(test_x), num_classes))
    np.add.at(votes, (np.arange(len(test_x))[:, None], train_y[idx]), weights)
    return np.argmax(votes, axis=1)


def knn_accuracy(train: rep.Split, test: rep.Split, k: int, *, num_classes: int,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
    """The accuracy on `test` of the weighted kNN over `train` (test rows in chunks; in
    NumPy: no compile per k or shape)."""
    correct = 0
    for s in range(0, len(test.x), chunk):
        pred = knn_predict(train.x, train.y, test.x[s:s + chunk], k=int(k),
                           num_classes=num_classes, temperature=float(temperature))
        correct += int(np.sum(pred == test.y[s:s + chunk]))
    return correct / len(test.x)


def evaluate(state, ctx, *, ks=(20,), temperature: float = 0.07, field: str = "image",
             label_field: str = "label", num_train: int | None = None,
             num_test: int | None = None, batch_size: int = 256, baselines: bool = True,
             prefix: str = "") -> dict[str, float]:
    """`knn{k}_acc` for each k in `ks` with its baselines (module docstring).

    Args:
      state: the train state. ctx: the trainer's `EvalContext`.
      ks: neighbour counts (DINO: 20; also 10, 100, 200).
      temperature: T of the vote weights exp(s / T) (DINO: 0.07).
      field, label_field, num_train, num_test, batch_size, baselines, prefix: as
        `few_shot.evaluate`.
    """
    if not ks or any(int(k) < 1 for k in ks) or temperature <= 0:
        raise ValueError(f"knn: ks must be ints >= 1 and temperature > 0, got ks={ks!r}, "
                         f"temperature={temperature!r}")
    sets = rep.feature_sets(state, ctx, field=field, label_field=label_field,
                            num_train=num_train, num_test=num_test, batch_size=batch_size,
                            baselines=baselines, who="knn")
    c = rep.num_classes(sets)
    return {f"{prefix}knn{int(k)}_acc{suffix}": knn_accuracy(fs.train, fs.test, int(k),
                                                             num_classes=c,
                                                             temperature=temperature)
            for suffix, fs in sets.items() for k in ks}
