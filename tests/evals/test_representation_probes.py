"""The representation probes (few_shot, knn, linear_probe) against references and planted
signals: few-shot ridge equals a transcription of big_vision's eigendecomposition solver,
kNN a plain loop; on Gaussian classes whose Bayes accuracy is known in closed form the
probes reach it (or what their few examples allow), on labels independent of the features
they stay at chance; and `evaluate` reports the raw-pixel and random-init baselines
measured the same way (a model whose features are its pixels scores exactly its baseline)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from ssl_gen.data import InMemorySource
from ssl_gen.evals import few_shot, knn, linear_probe
from ssl_gen.evals import representation as rep
from ssl_gen.evals.context import EvalContext
from ssl_gen.models import gan

C, D, SEP = 10, 32, 3.0


def planted(n: int, seed: int, *, sep: float = SEP, noise_labels: bool = False) -> rep.Split:
    """x = sep * e_y + N(0, I) in D dims, y uniform over C classes (or x independent of y)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, C, n)
    x = r.standard_normal((n, D))
    x[np.arange(n), y] += sep
    if noise_labels:
        y = r.integers(0, C, n)
    return rep.Split(x.astype(np.float32), y.astype(np.int32))


def bayes_accuracy(sep: float = SEP, classes: int = C) -> float:
    """P(correct) of the nearest-mean rule (Bayes for equal isotropic Gaussians, equal
    priors): P(z_y + sep > max of the other C - 1 standard normals), by quadrature."""
    z = np.linspace(-9, 9, 20001)
    return float(np.trapezoid(stats.norm.pdf(z) * stats.norm.cdf(z + sep) ** (classes - 1), z))


# -------------------------------------------------------------------------- references


def _big_vision_ridge(x, y, x_test, y_test, l2):
    """big_vision fewshot_lsr's solver, transcribed: whiten, bias 100, eigh of the Gram."""
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    prep = lambda a: np.pad((a - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
    x, x_test = prep(x.astype(np.float64)), prep(x_test.astype(np.float64))
    t = 2.0 * np.eye(C)[y] - 1.0
    if len(x) >= x.shape[1]:
        eigs, q = np.linalg.eigh(x.T @ x)
        rhs, lhs = q.T @ (x.T @ t), q
    else:
        eigs, q = np.linalg.eigh(x @ x.T)
        rhs, lhs = q.T @ t, x.T @ q
    w = (lhs / (eigs + l2)[None]) @ rhs
    return np.argmax(x_test @ w, 1) == y_test


@pytest.mark.parametrize("shots,dim", [(10, 8), (1, 64)])  # primal (N >= D) and dual
def test_few_shot_ridge_equals_big_visions_solver(shots, dim):
    r = np.random.default_rng(0)
    tr_y = np.repeat(np.arange(C), 20).astype(np.int32)
    tr = rep.Split(r.standard_normal((len(tr_y), dim)).astype(np.float32) + tr_y[:, None], tr_y)
    te_y = r.integers(0, C, 300).astype(np.int32)
    te = rep.Split(r.standard_normal((300, dim)).astype(np.float32) + te_y[:, None], te_y)
    idx = few_shot.support_indices(tr.y, shots, C, seed=3)
    assert sorted(np.bincount(tr.y[idx])) == [shots] * C
    want = float(np.mean(_big_vision_ridge(tr.x[idx], tr.y[idx], te.x, te.y, 1024.0)))
    got = few_shot.few_shot_accuracy(tr, te, shots, num_classes=C, l2_reg=1024.0, seeds=(3,))
    assert got == pytest.approx(want, abs=1.5 / 300)  # at most one prediction apart
    assert 0.2 < got < 1.0  # the check is not on a degenerate case


def test_knn_equals_a_plain_loop():
    tr, te = planted(300, 1, sep=1.0), planted(60, 2, sep=1.0)
    k, temp = 7, 0.1
    got = knn.knn_predict(tr.x, tr.y, te.x, k=k, num_classes=C, temperature=temp)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    for i, q in enumerate(unit(te.x.astype(np.float64))):
        sims = unit(tr.x.astype(np.float64)) @ q
        votes = np.zeros(C)
        for j in np.argsort(-sims)[:k]:
            votes[tr.y[j]] += np.exp(sims[j] / temp)
        assert got[i] == np.argmax(votes), i


def test_few_shot_refuses_a_class_with_too_few_examples():
    y = np.array([0, 0, 1], np.int32)
    with pytest.raises(ValueError, match="class 1 has 1 training examples"):
        few_shot.support_indices(y, 2, 2, seed=0)


# ---------------------------------------------------------------------- planted signals


@pytest.mark.slow
def test_probes_reach_the_planted_accuracy():
    """Bayes accuracy 0.902 (sep 3, 10 classes, 32 dims). The linear probe (1,500 training
    points, the Bayes rule is linear) must come within 0.04 of it and not above it by more
    than 3 standard errors; kNN and 25-shot ridge, with far less to go on, within 0.1, and
    more shots must help."""
    tr, te = planted(1500, 1), planted(2000, 2)
    bayes = bayes_accuracy()
    se = np.sqrt(bayes * (1 - bayes) / len(te.y))
    assert bayes == pytest.approx(0.902, abs=1e-3)
    acc, _ = linear_probe.probe(tr, te, num_classes=C, epochs=30)
    assert bayes - 0.04 < acc < bayes + 3 * se, (acc, bayes)
    assert bayes - 0.1 < knn.knn_accuracy(tr, te, 20, num_classes=C) < bayes + 3 * se
    fs = {s: few_shot.few_shot_accuracy(tr, te, s, num_classes=C) for s in (1, 5, 25)}
    assert bayes - 0.1 < fs[25] < bayes + 3 * se, fs
    assert fs[1] < fs[5] < fs[25], fs


def test_probes_on_labels_independent_of_the_features_stay_at_chance():
    tr, te = planted(1500, 3, noise_labels=True), planted(2000, 4, noise_labels=True)
    tol = 4 * np.sqrt(0.1 * 0.9 / len(te.y))  # 4 standard errors around 1 / C
    accs = {"linear": linear_probe.probe(tr, te, num_classes=C, epochs=30)[0],
            "knn": knn.knn_accuracy(tr, te, 20, num_classes=C),
            **{f"fewshot{s}": few_shot.few_shot_accuracy(tr, te, s, num_classes=C)
               for s in (1, 5, 25)}}
    for name, acc in accs.items():
        assert abs(acc - 1 / C) < tol, (name, acc)


# -------------------------------------------------------------------- evaluate + baselines


class Projection(nn.Module):
    """features(x) = flatten(x) @ W: a FeatureExtractor whose weights set the features."""

    dim: int = D

    def setup(self):
        self.proj = nn.Dense(self.dim, use_bias=False)

    def __call__(self, x):
        return self.features(x)

    def features(self, x):
        return self.proj(x.reshape(x.shape[0], -1))


def _ctx(model, seed=0, n_train=600, n_test=400):
    tr, te = planted(n_train, seed + 10), planted(n_test, seed + 11)
    src = lambda s: InMemorySource({"image": s.x.reshape(-1, 4, 8, 1), "label": s.y})
    return EvalContext(model=model, rng=jax.random.key(0), step=0, workdir="",
                       eval_batches=None, train_source=src(tr), eval_source=src(te))


def _state(kernel):
    return {"params": {"params": {"proj": {"kernel": jnp.asarray(kernel)}}}, "collections": {}}


EVALS = {
    "few_shot": (few_shot.evaluate, dict(shots=(5, 10)), ["fewshot5_acc", "fewshot10_acc"]),
    "knn": (knn.evaluate, dict(ks=(20,)), ["knn20_acc"]),
    "linear_probe": (linear_probe.evaluate, dict(epochs=20),
                     ["linear_probe_acc", "linear_probe_train_acc"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EVALS))
def test_evaluate_reports_both_baselines_measured_the_same_way(name):
    fn, kwargs, metrics = EVALS[name]
    model = Projection()
    ctx = _ctx(model)
    identity = fn(_state(np.eye(D, dtype=np.float32)), ctx, **kwargs)
    assert sorted(identity) == sorted(m + s for m in metrics for s in rep.SUFFIXES)
    for m in metrics:  # features = pixels: the model's number is the pixel baseline's
        assert identity[m] == identity[m + "_pixels"], m
    # The random-init baseline is model.init from the fixed seed, whatever the state holds.
    rand = rep.random_init_variables(model, ctx.train_source.arrays["image"])
    again = fn({"params": rand, "collections": {}}, ctx, **kwargs)
    for m in metrics:
        assert again[m] == identity[m + "_random_init"], m
        assert again[m + "_random_init"] == identity[m + "_random_init"], m
    # A state that destroys the signal (a rank-1 projection) scores near chance; the
    # baselines do not move.
    collapsed = fn(_state(np.ones((D, D), np.float32)), ctx, **kwargs)
    assert collapsed[metrics[0]] < 0.3 < identity[metrics[0]]
    assert collapsed[metrics[0] + "_pixels"] == identity[metrics[0] + "_pixels"]


def test_a_model_without_features_is_refused():
    model = gan.Model(data_shape=(4, 8, 1), variant="tiny")
    with pytest.raises(TypeError, match="FeatureExtractor"):
        knn.evaluate(_state(np.eye(D)), _ctx(model))
