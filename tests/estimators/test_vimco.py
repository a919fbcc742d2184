"""The multi-sample bound with the VIMCO gradient: its value is the IWAE bound of the same
samples, its gradient is the paper's formula, both gradient options are unbiased against
exact enumeration of all K-tuples of joint codes, VIMCO has the lower variance, huge log
weights are fine, and bad settings are one-line ValueErrors."""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from ssl_gen import estimators as est
from tests.estimators import problems as P
from tests.estimators.tolerance import assert_mean_close, variance_and_se

# log p(x, z) of a real datum is far from 0 (here -4 to -8): the naive signal L^ carries
# that offset into every sample's score term, the leave-one-out difference cancels it.
OFFSET = -4.0
BERN = {"logits": jnp.array([0.4, -0.7]), "a": jnp.array(0.8)}  # 2 units: 4 codes
CAT = {"logits": P.CAT_LOGITS, "a": jnp.array(0.6)}  # 2 variables x 3 classes: 9 codes
ROWS = {"logits": jnp.array([[0.4, -0.7], [1.1, 0.2], [-0.5, -1.3]]), "a": jnp.array(0.8)}
X_ROWS = jnp.array([0.5, -1.0, 2.0])
V, PRIOR = jnp.array([1.0, -2.0]), jnp.array([0.3, -0.2])


def bern_log_joint(z, a, x=-1.0, scale=1.0, offset=OFFSET):
    """Nonlinear in z (a product of units inside a square) and in the decoder parameter a:
    z (..., 2) -> (...)."""
    s = z @ V + 1.5 * z[..., 0] * z[..., 1]
    return scale * (-0.5 * jnp.square(x - a * s) + z @ PRIOR) + offset


def cat_log_joint(z, a):
    s = jnp.sum(z * P.CAT_W)
    return -0.5 * jnp.square(1.0 - a * s) + jnp.sum(z[0] * z[1] * P.CAT_W[0]) + OFFSET


def objective_fn(log_joint, dist_cls, k, estimator="vimco"):
    """objective(params, key) over params {"logits", "a"}: a reaches log_joint by closure."""

    def objective(params, key):
        lj = functools.partial(log_joint, a=params["a"])
        dist_fn = lambda p: dist_cls(p["logits"])
        return est.multi_sample_bound(lj, dist_fn, k, estimator=estimator)(params, key)

    return objective


def exact_bound(log_joint, dist_cls, k, params):
    """E_{z_1..K ~ q}[log (1/K) sum_k w(z_k)], summed over all N**K tuples of joint codes."""
    dist = dist_cls(params["logits"])
    zs = dist.support()  # (N, *batch[, C])
    log_q = jax.vmap(lambda z: jnp.sum(dist.log_prob(z)))(zs)  # (N,)
    log_w = jax.vmap(lambda z: log_joint(z, params["a"]))(zs) - log_q
    tuples = jnp.array(list(itertools.product(range(zs.shape[0]), repeat=k)))  # (N**K, K)
    bounds = jax.nn.logsumexp(log_w[tuples], axis=1) - math.log(k)
    return jnp.sum(jnp.exp(jnp.sum(log_q[tuples], axis=1)) * bounds)


def reference_rows(zs, logits, a, scale, offset):
    """The bound and the paper's gradient (Mnih & Rezende 2016, Eq. 9-10) for the Bernoulli
    rows in float64 numpy, from closed-form derivatives (no autodiff): d log q / d logits
    = z - sigmoid(logits), d log w / d a = scale (x - a s) s."""
    zs, logits, a = (np.asarray(v, np.float64) for v in (zs, logits, a))
    k = zs.shape[0]
    s = zs @ np.asarray(V) + 1.5 * zs[..., 0] * zs[..., 1]  # (K, R)
    log_joint = scale * (-0.5 * (np.asarray(X_ROWS) - a * s) ** 2 + zs @ np.asarray(PRIOR))
    log_q = np.sum(zs * logits - np.logaddexp(0.0, logits), axis=-1)  # (K, R)
    log_w = log_joint + offset - log_q
    bound = logsumexp(log_w, axis=0) - math.log(k)  # (R,)
    signal = np.empty_like(log_w)
    for j in range(k):  # L^ - L_{-j}: w_j replaced by the geometric mean of the others
        replaced = log_w.copy()
        replaced[j] = np.delete(log_w, j, axis=0).mean(0)
        signal[j] = bound - (logsumexp(replaced, axis=0) - math.log(k))
    w_tilde = np.exp(log_w - logsumexp(log_w, axis=0))  # (K, R)
    score = zs - 1.0 / (1.0 + np.exp(-logits))  # (K, R, 2)
    g_logits = np.sum((signal - w_tilde)[..., None] * score, axis=0)  # grad log w = -score
    g_a = np.sum(w_tilde * scale * (np.asarray(X_ROWS) - a * s) * s)
    return bound, {"logits": g_logits, "a": g_a}


@pytest.mark.parametrize("scale, offset", [(1.0, OFFSET), (100.0, -300.0)])
def test_value_is_the_iwae_bound_and_gradient_the_paper_formula(scale, offset):
    """Rows (out shape (3,)), jit of a vmap over two keys: each key's value against
    log (1/K) sum_k w_k of its own samples (the objective draws dist.sample(key, (K,))), its
    gradient against the formula. At scale 100 the log weights spread over hundreds of nats
    and sit near -300 (float32's exp under- and overflows beyond +-88): a non-log-space
    implementation fails there."""
    k, keys = 4, jax.random.split(jax.random.key(3), 2)
    lj = lambda z, a: bern_log_joint(z, a, X_ROWS, scale, offset)
    objective = objective_fn(lj, est.Bernoulli, k)
    naive = objective_fn(lj, est.Bernoulli, k, "score_function")

    def run(p, kk):
        grads = jax.grad(lambda q: jnp.sum(objective(q, kk)))(p)
        return objective(p, kk), naive(p, kk), grads

    values, naive_values, grads = jax.jit(jax.vmap(run, in_axes=(None, 0)))(ROWS, keys)
    assert values.shape == (2, 3)
    # Both options share the value (only the score terms' signal differs).
    np.testing.assert_array_equal(naive_values, values)
    for i, key in enumerate(keys):
        zs = est.Bernoulli(ROWS["logits"]).sample(key, (k,))
        bound, truth = reference_rows(zs, ROWS["logits"], ROWS["a"], scale, offset)
        # float32 against float64: the log weights' relative rounding (ulp 6e-5 at |log w|
        # ~1e3, scale 100) reaches the bound, and the signals L^ - L_{-k}, as absolute error.
        atol = 1e-6 * float(np.max(np.abs(bound)))
        np.testing.assert_allclose(values[i], bound, rtol=1e-6, atol=atol)
        np.testing.assert_allclose(grads["logits"][i], truth["logits"], rtol=1e-5,
                                   atol=10 * atol)
        np.testing.assert_allclose(grads["a"][i], truth["a"], rtol=1e-5, atol=10 * atol)


def _replicas(problem, log_joint, dist_cls, k, num_replicas, seed):
    """VIMCO and score-function replicas (est.grad_samples) in one compiled program."""

    def run(params, key):
        return {
            name: est.grad_samples(objective_fn(log_joint, dist_cls, k, name), params, key,
                                   num_replicas)
            for name in ("vimco", "score_function")
        }

    return jax.jit(run)(problem, P.key(seed))


def test_unbiased_against_enumeration_and_vimco_has_lower_variance():
    """Bernoulli, 2 units, K = 2 (16 tuples of codes): the exact d E[L^] by autodiff of the
    enumerated sum, w.r.t. the logits and the decoder parameter a. Mean within 4 standard
    errors of the replicas (tolerance.py: a fixed-seed false alarm ~6e-5 per coordinate), for
    both options: the naive one has a larger standard error, so its check is looser."""
    k = 2
    truth = jax.jit(jax.grad(functools.partial(exact_bound, bern_log_joint, est.Bernoulli, k)))(
        BERN
    )  # about (-0.16, 0.14) for the logits and -0.86 for a
    out = _replicas(BERN, bern_log_joint, est.Bernoulli, k, 50_000, seed=1)
    for name, grads in out.items():
        jax.tree.map(lambda g, t, n=name: assert_mean_close(g, t, what=f"bernoulli/{n}"),
                     grads, truth)
    # The score terms differ only by the baseline; a's gradient (pathwise) is the same.
    var_vimco, se_vimco = variance_and_se(out["vimco"]["logits"])
    var_naive, se_naive = variance_and_se(out["score_function"]["logits"])
    np.testing.assert_array_equal(out["vimco"]["a"], out["score_function"]["a"])
    ratio = var_naive / var_vimco
    # Measured 60x and 64x (seed 1: variances 0.128, 0.108 against 7.69, 6.90); 10x leaves a
    # clear margin, far outside either variance's per-cent standard error.
    assert np.all(var_vimco + 4 * se_vimco < (var_naive - 4 * se_naive) / 10), ratio


def test_categorical_unbiased_against_enumeration():
    """2 variables x 3 classes, K = 3: 9**3 = 729 tuples of one-hot codes."""
    k = 3
    exact = functools.partial(exact_bound, cat_log_joint, est.Categorical, k)
    truth = jax.jit(jax.grad(exact))(CAT)
    grads = jax.jit(lambda p, kk: est.grad_samples(
        objective_fn(cat_log_joint, est.Categorical, k), p, kk, 20_000))(CAT, P.key(2))
    jax.tree.map(lambda g, t: assert_mean_close(g, t, what="categorical/vimco"), grads, truth)


def test_errors_are_one_line_value_errors():
    lj, dist_fn = functools.partial(bern_log_joint, a=0.8), est.Bernoulli
    with pytest.raises(ValueError, match=r"estimator='vimco'\) needs num_samples >= 2, got 1"):
        est.multi_sample_bound(lj, dist_fn, 1)
    with pytest.raises(ValueError, match="needs num_samples >= 1, got 0"):
        est.multi_sample_bound(lj, dist_fn, 0, estimator="score_function")
    with pytest.raises(ValueError, match=r"unknown estimator 'rloo'; choose from \('vimco'"):
        est.multi_sample_bound(lj, dist_fn, 4, estimator="rloo")
    # K = 1 without a baseline is the single-sample ELBO: log w of the one sample.
    elbo = est.multi_sample_bound(lj, dist_fn, 1, estimator="score_function")
    key = jax.random.key(0)
    z = est.Bernoulli(BERN["logits"]).sample(key, (1,))[0]
    log_w = lj(z) - jnp.sum(est.Bernoulli(BERN["logits"]).log_prob(z))
    np.testing.assert_allclose(jax.jit(elbo)(BERN["logits"], key), log_w, rtol=1e-6)
    bad = est.multi_sample_bound(lambda z: z[:1], dist_fn, 2)  # (1,) is no prefix of (2,)
    with pytest.raises(ValueError, match="must be a prefix"):
        jax.eval_shape(bad, BERN["logits"], key)
