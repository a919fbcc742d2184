r"""Variational lower bounds on mutual information, from a critic's score matrix.

Every bound takes `scores`, an (N, N) matrix with `scores[i, j] = f(x_i, y_j)` for a batch
of N pairs (x_i, y_i) ~ p(x, y): the diagonal holds the N samples of the joint, the
N (N - 1) off-diagonal entries pair independent x and y, samples of p(x) p(y). Each
returns a scalar, the bound's minibatch estimate in nats; maximizing it over the critic
(`ssl_gen.models.critics`) tightens the bound, and its value is then the MI estimate.

| bound          | population form                                           | optimal f       |
|----------------|-----------------------------------------------------------|-----------------|
| `tuba`         | 1 + E_p[f - log a(y)] - E_{p(x)p(y)}[e^f / a(y)]          | log a(y) + log r |
| `nwj`          | TUBA with a(y) = e: E_p[f] - e^{-1} E_{p(x)p(y)}[e^f]     | 1 + log r       |
| `infonce`      | E[1/N sum_i log e^{f(x_i,y_i)} / (1/N sum_j e^{f(x_i,y_j)})] | log r + c(x) |
| `js`           | NWJ's value of 1 + f, the JS divergence's gradient         | log r           |
| `interpolated` | multi-sample TUBA, a = alpha m(y; x_{1:N}) + (1 - alpha) q(y) | -            |

r(x, y) = p(y | x) / p(y) is the density ratio; I(X; Y) = E_p[log r]. All are from Poole,
Ozair, van den Oord, Alemi & Tucker (2019), "On Variational Bounds of Mutual Information"
(ICML), which unifies NWJ (Nguyen, Wainwright & Jordan 2010; "f-GAN KL", MINE-f) and
InfoNCE (van den Oord et al. 2018, "CPC") and introduces TUBA, I_JS's use as an estimator
and the interpolated I_alpha. The formulas follow the paper's reference colab
(google-research/vbmi), transposed to `scores[i, j] = f(x_i, y_j)`; `js` differs in one
constant, said in its docstring.

The trade-off (Poole et al., Sec. 2-3; McAllester & Stratos 2020 for the limits): the
single-sample bounds (TUBA, NWJ, JS's evaluation) are unbiased estimates of a bound that
is tight at the optimal critic, but estimate E_{p(x)p(y)}[e^f] by a sample mean whose
variance grows like e^{I}: useless above a few nats. InfoNCE has low variance but can
never exceed log N (`infonce(s) <= log N` for any scores), so it is badly biased once
I > log N. I_alpha sits between: its value is at most 1 + log((N - 1) / alpha) and its
variance falls as alpha rises (alpha -> 0 is TUBA, alpha = 1 an InfoNCE of N - 1 samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(scores: jax.Array) -> jax.Array:
    scores = jnp.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        raise ValueError(f"mi_bounds: scores must be a square (N, N) matrix with N >= 2 "
                         f"(scores[i, j] = f(x_i, y_j)), got shape {scores.shape}")
    return scores


def _offdiag_logmeanexp(scores: jax.Array) -> jax.Array:
    """log of the mean of exp(scores) over the N (N - 1) off-diagonal entries."""
    n = scores.shape[0]
    masked = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, scores)
    return jax.nn.logsumexp(masked) - jnp.log(n * (n - 1.0))


def _offdiag_mean(values: jax.Array) -> jax.Array:
    n = values.shape[0]
    return (jnp.sum(values) - jnp.trace(values)) / (n * (n - 1.0))


def infonce(scores: jax.Array) -> jax.Array:
    r"""I_NCE = log N + 1/N \sum_i [f(x_i, y_i) - log \sum_j e^{f(x_i, y_j)}] (van den Oord
    et al. 2018; Poole et al. 2019, Eq. 12): log N minus the cross-entropy of classifying
    each x_i's partner among the N candidates y_j (`contrastive_losses.info_nce_loss`).

    Low variance, but never above log N: the log-softmax is <= 0. Tight only for
    I <= log N with the optimal critic f = log r(x, y) + c(x) and N -> infinity.

    Args:
      scores: (N, N), scores[i, j] = f(x_i, y_j), positives on the diagonal.

    Returns:
      The bound's estimate, nats (a scalar).
    """
    scores = _check(scores)
    n = scores.shape[0]
    log_softmax = jnp.diagonal(scores) - jax.nn.logsumexp(scores, axis=1)
    return jnp.log(float(n)) + jnp.mean(log_softmax)


def tuba(scores: jax.Array, log_baseline: jax.Array | float = 0.0) -> jax.Array:
    r"""I_TUBA = 1 + E_{p(x,y)}[f(x, y) - log a(y)] - E_{p(x)p(y)}[e^{f(x, y)} / a(y)]
    (Poole et al. 2019, Eq. 8: the "tractable unnormalized Barber-Agakov" bound).

    The joint term averages the diagonal, the marginal term the off-diagonal entries.
    The estimate is unbiased for the bound, tight when f - log a = log r (e.g. f = log
    p(y | x) and a(y) = p(y)), but the marginal term's variance grows exponentially with
    the MI; a learned baseline a(y) lowers it.

    Args:
      scores: (N, N), scores[i, j] = f(x_i, y_j), positives on the diagonal.
      log_baseline: log a(y_j), shape (N,) (one per y, i.e. per column) or a scalar.

    Returns:
      The bound's estimate, nats.
    """
    scores = _check(scores)
    log_baseline = jnp.broadcast_to(jnp.asarray(log_baseline, scores.dtype),
                                    (scores.shape[1],))
    scores = scores - log_baseline[None, :]  # f(x_i, y_j) - log a(y_j)
    joint = jnp.mean(jnp.diagonal(scores))
    marginal = jnp.exp(_offdiag_logmeanexp(scores))
    return 1.0 + joint - marginal


def nwj(scores: jax.Array) -> jax.Array:
    r"""I_NWJ = E_{p(x,y)}[f] - e^{-1} E_{p(x)p(y)}[e^f] (Nguyen, Wainwright & Jordan 2010;
    "f-GAN KL", MINE-f): TUBA with the constant baseline a(y) = e.

    Tight at f = 1 + log r; high variance (exponential in the MI) like TUBA, with no
    baseline to reduce it.

    Args:
      scores: (N, N), scores[i, j] = f(x_i, y_j), positives on the diagonal.

    Returns:
      The bound's estimate, nats.
    """
    return tuba(scores, 1.0)


def js_divergence(scores: jax.Array) -> jax.Array:
    r"""The f-GAN lower bound on the Jensen-Shannon divergence between p(x, y) and p(x) p(y),
    E_p[-softplus(-f)] - E_{p(x)p(y)}[softplus(f)] (Nowozin et al. 2016): a GAN
    discriminator's objective with logit f, maximized at f = log r (up to log 4 - 2 JS).
    Not an MI bound; `js` trains critics with it."""
    scores = _check(scores)
    joint = jnp.mean(-jax.nn.softplus(-jnp.diagonal(scores)))
    return joint - _offdiag_mean(jax.nn.softplus(scores))


def js(scores: jax.Array) -> jax.Array:
    r"""I_JS: the critic trained by the JS divergence bound, evaluated by NWJ (Poole et al.
    2019, Sec. 2.3; as in Hjelm et al. 2019, "Deep InfoMax").

    The value is the NWJ bound of the critic 1 + f, 1 + E_p[f] - E_{p(x)p(y)}[e^f], a valid
    MI lower bound for any f; the gradient is that of `js_divergence` (a straight-through
    sum: value of one, gradient of the other). The JS objective's optimum, f = log r, is
    exactly where the evaluation is tight, and its gradients stay bounded (a logistic
    loss), so training is stable; the estimate keeps NWJ's high variance.

    Note: the reference colab evaluates `nwj(f)` instead, E_p[f] - E_q[e^{f - 1}], which
    at the JS optimum f = log r equals I - 1/e; the shift by one removes that gap.

    Args:
      scores: (N, N), scores[i, j] = f(x_i, y_j), positives on the diagonal.

    Returns:
      The estimate, nats (its gradient: the JS bound's).
    """
    train = js_divergence(scores)
    value = nwj(scores + 1.0)
    return train + jax.lax.stop_gradient(value - train)


def _leave_one_out_logsumexp(scores: jax.Array) -> jax.Array:
    """out[a, j] = log sum_{l != j} exp(scores[a, l]), without cancellation, in O(N^2).

    With M_a the row's maximum and S_a = sum_l exp(scores[a, l] - M_a) >= 1: for j not at
    the maximum, S_a - exp(scores[a, j] - M_a) >= 1 (the maximum stays in), so subtracting
    loses nothing; at the maximum (its first index) the row's logsumexp with that entry
    masked is taken directly.
    """
    n = scores.shape[1]
    top = jnp.argmax(scores, axis=1)  # (A,)
    is_top = jnp.arange(n)[None, :] == top[:, None]  # (A, N)
    peak = jnp.max(scores, axis=1, keepdims=True)  # (A, 1)
    shifted = jnp.exp(scores - jax.lax.stop_gradient(peak))  # (A, N), <= 1
    total = jnp.sum(shifted, axis=1, keepdims=True)  # (A, 1), >= 1
    # A safe 1 where the branch is not used keeps its gradient finite (no 0 * inf).
    rest = jnp.where(is_top, 1.0, total - shifted)
    not_top = jax.lax.stop_gradient(peak) + jnp.log(rest)
    at_top = jax.nn.logsumexp(jnp.where(is_top, -jnp.inf, scores), axis=1, keepdims=True)
    return jnp.where(is_top, at_top, not_top)


def interpolated(scores: jax.Array, log_baseline: jax.Array | float,
                 alpha: float | jax.Array) -> jax.Array:
    r"""I_alpha, the bound interpolating InfoNCE and TUBA (Poole et al. 2019, Eq. 15-16).

    The multi-sample TUBA bound with the baseline
        a(y; x_{1:K}) = alpha m(y; x_{1:K}) + (1 - alpha) q(y),
        m(y; x_{1:K}) = 1/K sum_k e^{f(x_k, y)},
    q(y) = e^{log_baseline} a learned one, estimated from one batch as the reference colab
    does: each j in turn is held out, y_j is the independent sample of the marginal term
    and x_{!=j} (K = N - 1) the samples inside m; the two terms average over j and i != j:

        1 + mean_{i != j}[f(x_i, y_i) - log a(y_i; x_{!=j})]
          - mean_{i != j}[e^{f(x_i, y_j)} / a(y_j; x_{!=j})].

    alpha = 0 is TUBA with baseline q; alpha = 1 makes the marginal term exactly 1 and
    leaves an InfoNCE of N - 1 samples (normalized over x, the paper's m(y; x_{1:K})).
    For alpha > 0 the value is at most 1 + log((N - 1) / alpha): alpha trades InfoNCE's
    bias (small alpha lifts the ceiling) against TUBA's variance (large alpha lowers it).

    Args:
      scores: (N, N), scores[i, j] = f(x_i, y_j), positives on the diagonal.
      log_baseline: log q(y_j), shape (N,) or a scalar (unused at alpha = 1).
      alpha: in [0, 1], a float or a scalar array.

    Returns:
      The bound's estimate, nats.
    """
    scores = _check(scores)
    n = scores.shape[0]
    t = scores.T  # t[a, b] = f(x_b, y_a): row a holds y_a against every x
    log_q = jnp.broadcast_to(jnp.asarray(log_baseline, t.dtype), (n,))
    alpha = jnp.asarray(alpha, t.dtype)
    # log m(y_a; x_{!=j}) for every (a, j): the leave-one-out mean over x.
    log_m = _leave_one_out_logsumexp(t) - jnp.log(n - 1.0)
    log_a = jnp.logaddexp(jnp.log(alpha) + log_m, jnp.log1p(-alpha) + log_q[:, None])
    # Marginal term: held-out y_j against x_i, i != j, with the baseline a(y_j; x_{!=j}).
    marginal = jnp.exp(_offdiag_logmeanexp(t - jnp.diagonal(log_a)[:, None]))
    # Joint term: (x_i, y_i) with the baseline a(y_i; x_{!=j}), over j != i.
    joint = _offdiag_mean(jnp.diagonal(t)[:, None] - log_a)
    return 1.0 + joint - marginal


BOUNDS = {"infonce": infonce, "nwj": nwj, "tuba": tuba, "js": js,
          "interpolated": interpolated}
# The bounds that take a learned log-baseline log a(y) (an MLP of y in the runner).
TAKES_BASELINE = ("tuba", "interpolated")
