"""The test problems, with their exact gradients and, where derived, closed-form variances.

Every problem is tiny (one to three latent units) so that exact answers exist and a few
ten thousand replicas take well under a second once compiled. The exact gradient of the
discrete problems is computed here by brute force (itertools over the joint values and
autodiff of sum_z p(z) f(z)), independently of `est.exact`.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ssl_gen import estimators as est

# --- Gaussian quadratic: f(z) = z^2, z ~ N(mu, sigma^2); E f = mu^2 + sigma^2. ---------------
MU, SIGMA = 0.7, 1.3
GAUSS_PARAMS = {"loc": jnp.array(MU), "scale": jnp.array(SIGMA)}
GAUSS_GRAD = {"loc": 2 * MU, "scale": 2 * SIGMA}


def gauss_dist(params):
    return est.Normal(params["loc"], params["scale"])


def gauss_f(z):
    return jnp.square(z)


def gauss_pathwise_var(num_samples: int) -> dict:
    """One sample, z = mu + sigma eps: d/dmu = 2z = 2mu + 2 sigma eps, variance 4 sigma^2;
    d/dsigma = 2 z eps = 2 mu eps + 2 sigma eps^2, variance 4 mu^2 + 4 sigma^2 Var(eps^2)
    = 4 mu^2 + 8 sigma^2. K samples divide by K."""
    return {
        "loc": 4 * SIGMA**2 / num_samples,
        "scale": (4 * MU**2 + 8 * SIGMA**2) / num_samples,
    }


def gauss_score_var(num_samples: int) -> dict:
    """One sample, no baseline: g_mu = z^2 eps / sigma, g_sigma = z^2 (eps^2 - 1) / sigma.
    With (mu + sigma eps)^4 = mu^4 + 6 mu^2 sigma^2 eps^2 + sigma^4 eps^4 + odd terms and
    E eps^(2m) = (2m - 1)!! (1, 3, 15, 105):
      E g_mu^2    = (mu^4 + 18 mu^2 sigma^2 + 15 sigma^4) / sigma^2,
      E g_sigma^2 = (2 mu^4 + 60 mu^2 sigma^2 + 78 sigma^4) / sigma^2.
    Variance = second moment - gradient^2; K samples divide by K."""
    m, s = MU, SIGMA
    e_mu = (m**4 + 18 * m**2 * s**2 + 15 * s**4) / s**2
    e_sigma = (2 * m**4 + 60 * m**2 * s**2 + 78 * s**4) / s**2
    return {
        "loc": (e_mu - GAUSS_GRAD["loc"] ** 2) / num_samples,
        "scale": (e_sigma - GAUSS_GRAD["scale"] ** 2) / num_samples,
    }


# --- The Bernoulli toy: f(b) = (b - t)^2, b ~ Bernoulli(sigmoid(theta)), one unit. ----------
# t = 0.45 as in REBAR/RELAX; theta != 0 so that no symmetry hides a sign error.
TOY_T, TOY_THETA = 0.45, 0.4


def toy_dist(theta):
    return est.Bernoulli(theta)


def toy_f(b):
    return jnp.square(b - TOY_T)


def toy_moments() -> dict:
    """Exact moments over b in {0, 1} of f and of the score s = b - p (d log p / d theta)."""
    p = 1 / (1 + math.exp(-TOY_THETA))
    probs, f, s = (
        np.array([1 - p, p]),
        np.array([TOY_T**2, (1 - TOY_T) ** 2]),
        np.array([-p, 1 - p]),
    )
    e = lambda x: float(np.sum(probs * x))
    return dict(
        p=p,
        grad=e(f * s),
        ef=e(f),
        ef2=e(f * f),
        es2=e(s * s),
        efs2=e(f * s * s),
        efs_sq=e((f * s) ** 2),
    )


def toy_grad() -> float:
    """d/dtheta [p (1 - t)^2 + (1 - p) t^2] = p (1 - p) (1 - 2t)."""
    p = 1 / (1 + math.exp(-TOY_THETA))
    return p * (1 - p) * (1 - 2 * TOY_T)


def toy_reinforce_var(num_samples: int) -> float:
    """g = mean_k f_k s_k: Var = (E[(f s)^2] - grad^2) / K."""
    m = toy_moments()
    return (m["efs_sq"] - m["grad"] ** 2) / num_samples


def toy_loo_var(num_samples: int) -> float:
    """g = T1 - T2, T1 = (1/K) sum_k f_k s_k, T2 = 1/(K(K-1)) sum_{j != k} f_j s_k.
    With a = E[f s] (the gradient), E s = 0 and independent samples:
      Var T1 = (E[(f s)^2] - a^2) / K,
      E T2^2 = (a^2 + E[f^2] E[s^2] + (K - 2) E[f]^2 E[s^2]) / (K (K - 1))   (E T2 = 0),
      Cov(T1, T2) = E[f] E[f s^2] / K.
    Var g = Var T1 + E T2^2 - 2 Cov(T1, T2)."""
    k, m = num_samples, toy_moments()
    a = m["grad"]
    var_t1 = (m["efs_sq"] - a**2) / k
    e_t2 = (a**2 + m["ef2"] * m["es2"] + (k - 2) * m["ef"] ** 2 * m["es2"]) / (k * (k - 1))
    return var_t1 + e_t2 - 2 * m["ef"] * m["efs2"] / k


# --- Small discrete problems with non-separable f. ------------------------------------------
BERN_LOGITS = jnp.array([0.3, -0.8, 1.2])
BERN_W = jnp.array([1.0, -2.0, 0.5])


def bern_dist(logits):
    return est.Bernoulli(logits)


def bern_f(b):
    return jnp.square(b @ BERN_W - 0.3)


CAT_LOGITS = jnp.array([[0.2, -0.5, 1.0], [0.0, 0.7, -0.3]])  # 2 variables, 3 classes
CAT_W = jnp.array([[1.0, -1.0, 0.5], [2.0, 0.0, -1.5]])


def cat_dist(logits):
    return est.Categorical(logits)


def cat_f(z):
    return jnp.square(jnp.sum(z * CAT_W) - 0.4) + jnp.sum(z[0] * z[1] * CAT_W[0])


def _brute_support(dist):
    """Every joint value by itertools (independent of `dist.support()`)."""
    if isinstance(dist, est.Bernoulli):
        shape = dist.batch_shape
        vals = itertools.product([0.0, 1.0], repeat=math.prod(shape))
        return jnp.array([np.reshape(v, shape) for v in vals])
    shape, c = dist.batch_shape, dist.num_classes
    eye = np.eye(c)
    vals = itertools.product(range(c), repeat=math.prod(shape))
    return jnp.array([eye[list(v)].reshape(shape + (c,)) for v in vals])


def brute_expectation(f, dist):
    """sum_z p(z) f(z), looping over the joint values in Python (traceable: jit it)."""
    zs = _brute_support(dist)
    return sum(jnp.exp(jnp.sum(dist.log_prob(z))) * f(z) for z in zs)


def brute_value(f, dist):
    """`brute_expectation`, jitted once per f."""
    return _brute_value_fn(f)(dist)


@functools.cache
def _brute_grad_fn(f, dist_fn):
    return jax.jit(jax.grad(lambda p: brute_expectation(f, dist_fn(p))))


@functools.cache
def _brute_value_fn(f):
    return jax.jit(lambda d: brute_expectation(f, d))


def brute_grad(f, dist_fn, params):
    """The exact gradient of E_{dist_fn(params)}[f] by enumeration and autodiff (jitted once
    per (f, dist_fn): compiles are this suite's cost)."""
    return _brute_grad_fn(f, dist_fn)(params)


def key(seed: int) -> jax.Array:
    """A key of XLA's RngBitGenerator ("rbg"): statistically sound like the default threefry,
    but its sampling programs compile ~3x faster on CPU, which is most of this suite's time.
    Under vmap, rbg draws the whole batch from one key's stream (jax PR #20094): replicas
    stay i.i.d. but differ from a loop over the keys, so the vmap test uses default keys."""
    return jax.random.key(seed, impl="rbg")


def replicas(estimator, f, dist_fn, params, num_samples, num_replicas, seed=0, state=None):
    """`num_replicas` independent gradient estimates (jitted), leading axis."""
    specs = {"only": (estimator, num_samples, state)}
    return many_replicas(specs, f, dist_fn, params, num_replicas, seed)["only"]


def many_replicas(specs, f, dist_fn, params, num_replicas, seed=0, with_values=False):
    """Replicas of several estimators on one problem, in one compiled program.

    Args:
      specs: name -> (estimator, num_samples, state or None).
      with_values: also return each replica's value (the MC estimate of E f).

    Returns:
      name -> gradient replicas (leading axis), or name -> (values, gradients).

    One program for all halves the compile time, which dominates this suite; the estimators
    share keys (common random numbers), which leaves each one's replicas i.i.d.
    """

    def run(p, k):
        keys = jax.random.split(k, num_replicas)
        out = {}
        for name, (estimator, num_samples, state) in specs.items():
            objective = est.expectation(f, dist_fn, estimator, num_samples)
            if state is None:
                value_fn = lambda q, kk, o=objective: jnp.sum(o(q, kk))
            else:
                value_fn = lambda q, kk, o=objective, s=state: jnp.sum(o(q, kk, s)[0])
            values, grads = jax.vmap(jax.value_and_grad(value_fn), in_axes=(None, 0))(p, keys)
            out[name] = (values, grads) if with_values else grads
        return out

    return jax.jit(run)(params, key(seed))


def toy_antithetic_var(name: str, num_samples: int) -> float:
    """ARM / DisARM on the toy, one unit, q = sigmoid(|theta|) >= 1/2, d = f(1) - f(0).
    ARM: g = d (u - 1/2) sign on {u < 1 - q} and {u > q}, 0 between (b = b~), so
      E g^2 = d^2 * 2 int_q^1 (u - 1/2)^2 du = d^2 (2/3) (1/8 - (q - 1/2)^3).
    DisARM: |g| = d q / 2 on the same two regions, of total mass 2 (1 - q), so
      E g^2 = d^2 q^2 (1 - q) / 2.
    Variance = E g^2 - grad^2; K pairs divide by K."""
    q = 1 / (1 + math.exp(-abs(TOY_THETA)))
    d = (1 - TOY_T) ** 2 - TOY_T**2
    second = (
        d**2 * (2 / 3) * (1 / 8 - (q - 0.5) ** 3) if name == "arm" else d**2 * q**2 * (1 - q) / 2
    )
    return (second - toy_grad() ** 2) / num_samples


def gauss_measure_valued_var(num_samples: int) -> dict:
    """Coupled measure-valued derivative of E[z^2], one sample:
    g_mu = ((mu + s W)^2 - (mu - s W)^2) / (s sqrt(2 pi)) = 4 mu W / sqrt(2 pi), W ~ Rayleigh,
      Var W = (4 - pi) / 2, so Var g_mu = 16 mu^2 (4 - pi) / (2 pi 2) = 4 mu^2 (4 - pi) / pi;
    g_sigma = ((mu + s M)^2 - (mu + s M U)^2) / s = 2 mu M (1 - U) + s M^2 (1 - U^2), with
      E M^2 = 3, E M^4 = 15, E (1 - U)^2 = 1/3, E (1 - U^2)^2 = 8/15 and odd moments of M 0:
      E g^2 = 4 mu^2 + 8 s^2, mean 2 s, so Var g_sigma = 4 mu^2 + 4 s^2. K samples divide by K."""
    m, s = MU, SIGMA
    return {
        "loc": 4 * m**2 * (4 - math.pi) / math.pi / num_samples,
        "scale": (4 * m**2 + 4 * s**2) / num_samples,
    }


def gauss_delta1_var(num_samples: int) -> dict:
    """Score function with the first-order Taylor control variate h(z) = mu^2 + 2 mu (z - mu)
    on E[z^2]: f - h = sigma^2 eps^2, so per sample
      g_mu = sigma eps^3 + 2 mu,          Var = sigma^2 E eps^6 = 15 sigma^2,
      g_sigma = sigma eps^2 (eps^2 - 1),  Var = sigma^2 (E eps^8 - 2 E eps^6 + E eps^4 - 4)
                                              = sigma^2 (105 - 30 + 3 - 4) = 74 sigma^2.
    (Second order: h = f, zero variance.) K samples divide by K."""
    return {"loc": 15 * SIGMA**2 / num_samples, "scale": 74 * SIGMA**2 / num_samples}


def gauss_measure_valued_uncoupled_var(num_samples: int) -> dict:
    """Uncoupled measure-valued derivative of E[z^2], one sample (independent sides):
    g_mu = ((mu + s W)^2 - (mu - s W')^2) / (s sqrt(2 pi)) = (2 mu (W + W') + s (W^2 - W'^2))
      / sqrt(2 pi), W, W' i.i.d. Rayleigh: Var W = (4 - pi) / 2, W^2 ~ Exp(mean 2) so
      Var W^2 = 4, and the cross term is 0: Var g_mu = (2 mu^2 (4 - pi) + 4 s^2) / pi;
    g_sigma = ((mu + s M)^2 - (mu + s G)^2) / s = 2 mu (M - G) + s (M^2 - G^2), M ~ DS-Maxwell,
      G ~ N(0, 1) independent: Var = 4 mu^2 (3 + 1) + s^2 ((15 - 9) + (3 - 1)) = 16 mu^2 + 8 s^2
      (odd moments vanish). Both exceed the coupled variances. K samples divide by K."""
    m, s = MU, SIGMA
    return {
        "loc": (2 * m**2 * (4 - math.pi) + 4 * s**2) / math.pi / num_samples,
        "scale": (16 * m**2 + 8 * s**2) / num_samples,
    }


# --- Gaussian rows: six test functions at once, one per output row. -------------------------
# z ~ N(loc, scale^2) of shape (6, 2); row r of f reads row r of z (the shape rule), so one
# program checks every function and each row's gradient is its own.
ROW_NAMES = ("linear", "quadratic", "cubic", "quartic", "weighted", "cos")
ROWS_PARAMS = {
    "loc": jnp.array([[0.7, -0.4], [0.3, 0.9], [-0.5, 0.6], [0.4, -0.2], [1.1, -0.7], [0.5, 1.3]]),
    "scale": jnp.array([[1.3, 0.6], [0.8, 1.1], [0.7, 0.5], [0.6, 0.9], [0.9, 0.4], [1.2, 0.7]]),
}
ROW_W = jnp.array([1.5, -0.8])
QUADRATIC_ROWS = (0, 1, 4)  # f polynomial of degree <= 2: the delta method at order 2 is exact


def rows_f(z):
    """(6, 2) -> (6,): w.z, (w.z)^2, sum z^3, sum z^4, sum w z^2, sum cos z."""
    return jnp.stack([
        z[0] @ ROW_W,
        jnp.square(z[1] @ ROW_W),
        jnp.sum(z[2] ** 3),
        jnp.sum(z[3] ** 4),
        jnp.sum(ROW_W * jnp.square(z[4])),
        jnp.sum(jnp.cos(z[5])),
    ])


def rows_expectation(params):
    """E f row by row, closed forms: E z^3 = m^3 + 3 m s^2, E z^4 = m^4 + 6 m^2 s^2 + 3 s^4,
    E cos z = cos m exp(-s^2 / 2)."""
    m, s = params["loc"], params["scale"]
    return jnp.stack([
        m[0] @ ROW_W,
        jnp.square(m[1] @ ROW_W) + jnp.square(s[1]) @ jnp.square(ROW_W),
        jnp.sum(m[2] ** 3 + 3 * m[2] * s[2] ** 2),
        jnp.sum(m[3] ** 4 + 6 * m[3] ** 2 * s[3] ** 2 + 3 * s[3] ** 4),
        jnp.sum(ROW_W * (jnp.square(m[4]) + jnp.square(s[4]))),
        jnp.sum(jnp.cos(m[5]) * jnp.exp(-0.5 * jnp.square(s[5]))),
    ])


def rows_grad() -> dict:
    """The exact gradient of sum_r E f_r (each row's parameters get their row's)."""
    return jax.grad(lambda p: jnp.sum(rows_expectation(p)))(ROWS_PARAMS)
