r"""Monte Carlo gradient estimators for E_{z ~ p_theta}[f(z)], as `jax.grad` transforms.

The API, stated once::

    from ssl_gen import estimators as est
    objective = est.expectation(f, dist_fn, est.pathwise(), num_samples=4)
    value = objective(params, key)            # MC estimate of E_{z ~ dist_fn(params)}[f(z)]
    grads = jax.grad(lambda p, k: objective(p, k).sum())(params, key)  # the estimate

- `dist_fn(params)` returns a distribution: a pytree of arrays. `est.Normal(loc, scale)`
  (diagonal, reparameterizable), `est.Bernoulli(logits)` (0./1. float samples),
  `est.Categorical(logits)` (one-hot samples on a trailing class axis, Gumbel-Max sampling).
  Each has `sample`, `log_prob` (elementwise, no axis summed), `entropy`, `kl`, `mean`;
  the discrete ones also `support()` (every joint value) and the Gumbel relaxation
  (`perturb`, `hard`, `soft`). See `ssl_gen.estimators.distributions`.
- `f(z)` maps one sample to an array whose shape is a prefix of z's (the reduced axes are
  the event axes). `f` may close over parameters (a decoder): their gradient is pathwise.
- An estimator is an immutable `Estimator` made by a factory. It returns a *surrogate*
  whose value is the MC estimate and whose `jax.grad` is the estimator's gradient, so it
  works under `jax.jit`, `jax.vmap` (over keys) and inside any larger loss.
- `est.grad_samples(objective, params, key, num_replicas)` stacks independent gradient
  estimates on a leading axis: the raw material for variance, SNR, bias and cosine;
  `est.variance.compare({name: estimator}, f, dist_fn, params, key, truth="exact")` turns
  them into one row per estimator (mean, bias, variance, SNR, cosine, evaluations, time).

State (optax's pattern, one protocol). Every estimator has `init() -> state`, a NamedTuple:
`est.EmptyState()` for a stateless one. A stateful one (`estimator.stateful`: its state has
leaves; `score_function(baseline="moving_average")`, `relax()`, anything combined with a
moving average) carries the state, which the caller threads explicitly::

    estimator = est.score_function(baseline="moving_average", decay=0.9)
    objective = est.expectation(f, dist_fn, estimator, num_samples=4)
    state = estimator.init()

    def loss(params, key, state):
        value, new_state = objective(params, key, state)   # a stateful objective's pair
        return value.sum(), new_state

    (value, state), grads = jax.value_and_grad(loss, has_aux=True)(params, key, state)

  The gradient uses the state passed in (independent of this call's samples, so it stays
  unbiased); `new_state` has this call's f values folded in and carries no gradient.
  Calling a stateful objective without a state is an error; every objective accepts
  `objective(params, key, estimator.init())` and returns `(value, state)`, a stateless one
  its empty state unchanged. `est.grad_samples(objective,
  params, key, n, state=state)` gives replicas that all start from `state`. At the level
  of `Estimator`, a stateful `estimate` takes the state as a fifth argument and returns
  `(surrogate, new_state)`.

Cost. `estimator.evaluations(num_samples, event_size, num_classes)` is the number of forward
f-evaluations in one estimate (its `cost`; tests/estimators/test_cost.py checks it against
counted calls): what fair comparisons hold equal (`objectives.estimator_config.
function_evaluations`, `est.variance`).

Control variates (`est.control_variates`, the values; `est.with_control_variate`, the
combinator). `with_control_variate(estimator, cv, coefficient)` estimates the gradient of
E[f - beta h] with any estimator and adds beta grad E[h] back in closed form, so an
estimator's gradient stays unbiased with any control variate whose expectation is exact;
biased are an estimated coefficient computed from the same samples (`"estimated"`) and
anything combined with a biased estimator. That rule, the instances (`constant`,
`moving_average`, `leave_one_out`, `delta`) and the coefficients (fixed, `"estimated"`,
`"estimated_loo"`) are stated once, in `ssl_gen.estimators.control_variates`. The string
baselines of `score_function` are these values.

Estimators (factories, named in `est.FACTORIES`; each docstring has the math, the paper,
biased or not, and what it requires; invalid settings are one-line ValueErrors at
construction or trace time):

- `pathwise()`: reparameterization, unbiased; needs `dist.rsample` (Normal).
- `measure_valued(coupled=True)`: the weak derivative of a `Normal` (Rayleigh for the mean,
  double-sided Maxwell for the scale), coupled (shared randomness between the positive and
  negative sides) or not, unbiased, f need not be differentiable; 4 E + 1 f evaluations
  per sample (E event coordinates), so for low-dimensional latents.
- `score_function(baseline=None | "moving_average" | "loo" | "optimal" | "delta", *,
  decay=None, order=None)`: REINFORCE with a baseline, unbiased, any distribution; correct
  when f depends on parameters (DiCE magic box), higher derivatives included.
  "loo"/"optimal" need K >= 2; "moving_average" is stateful (`est.MovingAverageState`,
  above); "delta" is the Taylor control variate of a `Normal` (order 1 or 2; exact for
  quadratic f at order 2). Each is `with_control_variate(score_function(), <value>)`.
- `exact(max_configs=4096)`: sum_z p(z) f(z) by enumeration: the true value, gradient and
  higher derivatives for small `Bernoulli` / `Categorical` latents (the tests' ground truth).
- `gumbel_softmax(temperature=1.0)`: the Concrete relaxation, f at softmax((logits + G)/tau);
  biased (bias -> 0 as tau -> 0); needs a discrete distribution and f defined on the simplex.
- `straight_through()`: f at exact samples, gradient as if z = E[z]; biased (exact for
  linear f).
- `straight_through_gumbel(temperature=1.0)`: f at the Gumbel-Max sample, gradient of its
  relaxation; biased. temperature <= 0 is a construction-time ValueError.
- `reinmax(temperature=1.0)`: straight-through with second-order (Heun) accuracy (Liu et
  al. 2023); biased in general, unbiased for f quadratic in each variable at tau = 1;
  tau < 1 is a construction-time ValueError.
- `arm()`, `disarm()`: antithetic, unbiased estimators for `Bernoulli` latents (Yin & Zhou
  2019; Dong et al. 2020); two f evaluations per sample (`num_samples` counts pairs);
  DisARM's variance <= ARM's.
- `gumbel_rao(temperature=1.0, num_rao_samples=10)`: straight-through Gumbel with its noise
  averaged given the sample (Paulus et al. 2021): ST-Gumbel's mean (biased), lower variance.
- `gapped_straight_through(temperature=1.0, gap=1.0)`: straight-through with a deterministic
  perturbation that makes the sample the argmax by a gap (Fan et al. 2022); biased.
- `rebar(temperature=0.5, eta=1.0)`: score function with the control variate
  eta f(Concrete(z~)) and its reparameterized correction (Tucker et al. 2017); unbiased.
- `relax(temperature=0.5, hidden=16, learning_rate=1e-2)`: REBAR plus a learned network
  r(z), trained online by Adam on the estimate's squared norm (its variance gradient;
  Grathwohl et al. 2018); unbiased, stateful (`est.RelaxState`).
- `SpanningTree(theta, mask=None)`: the Gibbs distribution over spanning trees; with
  `score_function`, `exact`, `gumbel_softmax` / `straight_through_gumbel` (the stochastic
  softmax trick, Paulus et al. 2020). See `ssl_gen.estimators.spanning_tree`.
- `indecater()`: local expectations for factorized `Bernoulli` / `Categorical` latents
  (Titsias & Lazaro-Gredilla 2015; De Smet et al. 2023), unbiased, exact when f reads one
  variable; K (E C + 1) f evaluations.
- `multi_sample_bound(log_joint, dist_fn, num_samples, *, estimator="vimco")`: not an
  `Estimator` but an objective of its own, the importance-weighted bound
  E[log (1/K) sum_k p(x, z_k) / q(z_k)] (Burda et al. 2016) with the VIMCO gradient (the
  geometric-mean leave-one-out baseline, Mnih & Rezende 2016; unbiased, K >= 2) or
  "score_function" (no baseline). See `ssl_gen.estimators.vimco`.

The problem. With L(theta) = E_{p_theta(z)}[f(z)], the gradient is an expectation of its
own only after a rewrite: the pathwise estimator moves theta into the sampling path
(z = g(theta, eps)); the score function uses grad p = p grad log p; the measure-valued
derivative writes grad p as a difference of two densities. Mohamed et al. (2020),
"Monte Carlo Gradient Estimation in Machine Learning", JMLR 21(132), is the review this
package follows; each estimator's docstring gives its own paper.

Precision. Everything computes in the distribution's dtype, with `jax_enable_x64` off or
on: float32 parameters stay float32 under x64 (no silent upcast), float64 parameters
compute in float64. Estimator states (`MovingAverageState`, `RelaxState`) are float32 in
both modes, so a training loop carries them with one dtype.

Requirements. An estimator given a distribution it does not support (pathwise without
`rsample`, measure_valued or the delta method without a `Normal`, ARM without a `Bernoulli`,
...) raises a one-line ValueError naming both, at trace time
(tests/estimators/test_requirements.py checks every factory on every distribution).

This package imports only jax/numpy (and `ssl_gen.structured`): never flax, never train.
"""

from ssl_gen.estimators import (
    control_variates,  # a module: est.control_variates.delta(...)
    variance,  # a module: est.variance.compare(...)
)
from ssl_gen.estimators.binary import arm, disarm
from ssl_gen.estimators.control_variates import ControlVariate, with_control_variate
from ssl_gen.estimators.core import (
    EmptyState,
    Estimator,
    check_num_samples,
    expectation,
    grad_samples,
    mean_over_samples,
)
from ssl_gen.estimators.distributions import (
    Bernoulli,
    Categorical,
    Normal,
    standard_normal_like,
)
from ssl_gen.estimators.exact import exact
from ssl_gen.estimators.indecater import indecater
from ssl_gen.estimators.measure_valued import measure_valued
from ssl_gen.estimators.pathwise import pathwise
from ssl_gen.estimators.rebar import RelaxParams, RelaxState, rebar, relax
from ssl_gen.estimators.relaxed import (
    gapped_straight_through,
    gumbel_rao,
    gumbel_softmax,
    reinmax,
    straight_through,
    straight_through_gumbel,
)
from ssl_gen.estimators.score_function import MovingAverageState, score_function
from ssl_gen.estimators.spanning_tree import SpanningTree
from ssl_gen.estimators.vimco import multi_sample_bound

# Every `Estimator` factory, by name: what a config may name (`objectives.make_estimator`).
# `multi_sample_bound` is an objective of its own, not a factory; the objectives that train
# it name it themselves ("vimco" in `objectives.discrete_elbo`).
FACTORIES = (
    "arm",
    "disarm",
    "exact",
    "gapped_straight_through",
    "gumbel_rao",
    "gumbel_softmax",
    "indecater",
    "measure_valued",
    "pathwise",
    "rebar",
    "reinmax",
    "relax",
    "score_function",
    "straight_through",
    "straight_through_gumbel",
)

__all__ = [
    "FACTORIES",
    "arm",
    "disarm",
    "Bernoulli",
    "Categorical",
    "ControlVariate",
    "EmptyState",
    "Estimator",
    "MovingAverageState",
    "Normal",
    "check_num_samples",
    "exact",
    "expectation",
    "gapped_straight_through",
    "grad_samples",
    "gumbel_rao",
    "gumbel_softmax",
    "indecater",
    "mean_over_samples",
    "measure_valued",
    "multi_sample_bound",
    "pathwise",
    "rebar",
    "reinmax",
    "relax",
    "RelaxParams",
    "RelaxState",
    "score_function",
    "SpanningTree",
    "standard_normal_like",
    "straight_through",
    "straight_through_gumbel",
    "variance",
    "with_control_variate",
    "control_variates",
]
