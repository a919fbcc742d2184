r"""The classic gradient-estimator toy problems: a variance/bias table and plots per toy.

Not a trainer config: `config.runner` names the runner that launches it (the trainer's
config tests skip it; tests/evals/test_estimator_toys.py runs its runlocal variants).
Launch (the `:arg` picks the toy; add `,runlocal` for a seconds-long smoke run):

  python -m ssl_gen.main --config=experiments/estimator_toys.py:gaussian \
      --workdir=runs/toys_gaussian

Variants:
  gaussian      E[f(x)], x ~ N(mu, sigma^2), f = (x - k)^2, cos(kx), exp(-kx^2) swept over k
  bernoulli     E[(b - t)^2], t = 0.45 and 0.499, theta trained by each estimator
  categorical   a categorical toy with exact gradients: bias/variance of the ST family
  runlocal      few estimators, replicas and steps (combine: `bernoulli,runlocal`)

The workdir gets report.md (every table), rows.json and the PNG plots; the tables are
printed too. Override anything: `--config.num_replicas=5000 --config.bernoulli.steps=5000`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def _estimators(**specs):
    """name -> {"name": factory, "num_samples": K, **factory kwargs}, in the order given."""
    return ml_collections.ConfigDict({k: dict(v) for k, v in specs.items()}, sort_keys=False)


def get_config(arg=None):
    arg = parse_arg(arg, gaussian=False, bernoulli=False, categorical=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.runner = "estimator_toys"  # ssl_gen.runners.estimator_toys, not the trainer
    c.toy = "bernoulli" if arg.bernoulli else "categorical" if arg.categorical else "gaussian"
    c.seed = 0
    c.num_replicas = 10_000  # independent estimates per statistic (se of a variance ~1.4%)
    c.time_repeats = 20  # timed calls per estimator (the median is reported)

    # Mohamed et al. (2020), Sec. 3: one-sample gradients of E_{N(mu, sigma^2)}[f]
    # in mu and sigma, exact gradients from the closed-form expectations.
    c.gaussian = ml_collections.ConfigDict(dict(
        loc=1.0, scale=1.0, reference_k=1.0,  # the full table (time, evals) is at k = 1
        ks=dict(quadratic=(-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
                cos=(0.5, 1.0, 1.5, 2.0, 3.0, 5.0),
                exp=(0.1, 0.3, 1.0, 3.0, 10.0))))
    c.gaussian.estimators = _estimators(
        pathwise=dict(name="pathwise", num_samples=1),
        score_function=dict(name="score_function", num_samples=1),
        # The delta method: the second-order Taylor control variate (Mohamed et al., Sec. 7).
        score_delta=dict(name="score_function", baseline="delta", num_samples=1),
        score_loo=dict(name="score_function", baseline="loo", num_samples=2),
        measure_valued=dict(name="measure_valued", num_samples=1),
        # Control variates on the other estimators too (est.control_variates): the delta
        # method with pathwise and measure-valued, an estimated coefficient, and the
        # uncoupled measure-valued derivative (independent positive and negative samples).
        pathwise_delta2=dict(name="pathwise", control_variate="delta2", num_samples=1),
        measure_valued_delta2=dict(name="measure_valued", control_variate="delta2",
                                   num_samples=1),
        score_delta1_estimated=dict(name="score_function", control_variate="delta1",
                                    coefficient="estimated_loo", num_samples=2),
        measure_valued_uncoupled=dict(name="measure_valued", coupled=False, num_samples=1))

    # The toy of Tucker et al. (2017), Grathwohl et al. (2018) and Yin & Zhou (2019):
    # minimize E[(b - t)^2] over theta = logit P(b = 1) from theta = 0; t near 1/2 makes
    # the gradient tiny (p (1 - p) (1 - 2t)) and the noise decisive. Adam, as in RELAX.
    c.bernoulli = ml_collections.ConfigDict(dict(
        targets=(0.45, 0.499), steps=2_000, learning_rate=0.01, log_every=100,
        variance_replicas=1_000))
    c.bernoulli.estimators = _estimators(
        reinforce=dict(name="score_function", num_samples=1),
        rloo=dict(name="score_function", baseline="loo", num_samples=2),
        arm=dict(name="arm", num_samples=1),
        disarm=dict(name="disarm", num_samples=1),
        rebar=dict(name="rebar", num_samples=1),
        relax=dict(name="relax", num_samples=1, hidden=8),
        st_gumbel=dict(name="straight_through_gumbel", num_samples=1, temperature=0.5))

    # N categoricals, C classes, a smooth non-quadratic f of the one-hots; exact gradients by
    # enumeration (C^N values). Temperature-taking estimators are swept over `temperatures`.
    c.categorical = ml_collections.ConfigDict(dict(
        num_variables=3, num_classes=4, temperatures=(0.25, 0.5, 1.0, 2.0)))
    c.categorical.estimators = _estimators(
        straight_through=dict(name="straight_through", num_samples=1),
        st_gumbel=dict(name="straight_through_gumbel", num_samples=1,
                       temperature=placeholder(float)),
        gumbel_rao=dict(name="gumbel_rao", num_samples=1, temperature=placeholder(float),
                        num_rao_samples=10),
        reinmax=dict(name="reinmax", num_samples=1,
                     temperature=placeholder(float)),  # tau >= 1 only
        gst=dict(name="gapped_straight_through", num_samples=1, temperature=placeholder(float)),
        rloo=dict(name="score_function", baseline="loo", num_samples=2))  # unbiased reference

    if arg.runlocal:  # seconds: two estimators per toy, few replicas, ks and steps
        c.num_replicas = 200
        c.time_repeats = 0  # no timing (one compile less per estimator): time shows "-"
        c.gaussian.ks = dict(quadratic=(0.0, 1.0), cos=(1.0,), exp=(1.0,))
        c.gaussian.estimators = _estimators(
            pathwise=dict(name="pathwise", num_samples=1),
            score_delta=dict(name="score_function", baseline="delta", num_samples=1))
        c.bernoulli.update(steps=20, log_every=10, variance_replicas=100)
        c.bernoulli.estimators = _estimators(
            disarm=dict(name="disarm", num_samples=1),
            relax=dict(name="relax", num_samples=1, hidden=2))
        c.categorical.update(num_variables=2, num_classes=3, temperatures=(1.0, 2.0))
        c.categorical.estimators = _estimators(
            gumbel_rao=dict(name="gumbel_rao", num_samples=1, temperature=placeholder(float),
                            num_rao_samples=2),
            rloo=dict(name="score_function", baseline="loo", num_samples=2))
    return c
