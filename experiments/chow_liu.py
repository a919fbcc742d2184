r"""Learning a Chow-Liu tree through gradient estimators over spanning trees.

Not a trainer config: `config.runner` names the runner that launches it (the trainer's
config tests skip it; tests/evals/test_chow_liu.py runs its runlocal variant).

  python -m ssl_gen.main --config=experiments/chow_liu.py \
      --workdir=runs/chow_liu

A random spanning tree on `num_nodes` nodes (uniform, Pruefer), Gaussian samples Markov on
it, the empirical mutual informations I_ij = -1/2 log(1 - rho_ij^2), and the objective
E_{T ~ p_theta}[f(T)] with f(T) = \sum_{(i,j) in T} I_ij (the tree model's log-likelihood
per sample up to a constant; Chow & Liu 1968), maximized with Adam through each estimator.

Variants:
  default       8 nodes, 100 weakly correlated samples, 300 Adam steps, 4 estimators (~2 min)
  easy          strong correlations and many samples (the Chow-Liu tree is the true tree)
  runlocal      5 nodes, few steps and replicas (seconds; combine: `easy,runlocal`)

The workdir gets report.md, rows.json and the PNG plots. Override anything, e.g.
`--config.steps=1000 --config.estimators.score_loo.num_samples=8`.
"""

import ml_collections

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def _estimators(**specs):
    """name -> {"name": factory, "num_samples": K, **factory kwargs}, in the order given."""
    return ml_collections.ConfigDict({k: dict(v) for k, v in specs.items()}, sort_keys=False)


def get_config(arg=None):
    arg = parse_arg(arg, default=False, easy=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.runner = "chow_liu"  # ssl_gen.runners.chow_liu, not the trainer
    c.seed = 0
    c.num_nodes = 8
    # Weak correlations and few samples: the Chow-Liu tree (the maximum-likelihood tree of
    # the data) shares only some edges with the true tree (4 of 7 at seed 0), so learning
    # is scored against both.
    c.num_data = 100  # Gaussian samples drawn from the true tree model
    # Edge correlations of the true tree, drawn uniformly in [low, high] with random signs.
    c.correlation = (0.1, 0.5)
    c.steps = 300
    c.learning_rate = 0.05  # Adam
    c.log_every = 10  # the exact objective E_{p_theta}[f] is logged every log_every steps
    c.variance_points = 4  # gradient variance at this many points along training
    c.variance_replicas = 200  # est.grad_samples replicas per point
    # perturb-and-MAP vs Gibbs on K4 with nonuniform theta: Monte Carlo trees per method.
    c.pam_num_samples = 20_000
    c.estimators = _estimators(
        score_loo=dict(name="score_function", baseline="loo", num_samples=4),
        gumbel_softmax=dict(name="gumbel_softmax", num_samples=1, temperature=0.5),
        st_gumbel=dict(name="straight_through_gumbel", num_samples=1, temperature=0.5),
        exact=dict(name="exact", num_samples=1, max_configs=300_000))  # n <= 8 only

    if arg.easy:  # the Chow-Liu tree is the true tree with overwhelming probability
        c.correlation = (0.7, 0.9)
        c.num_data = 5_000
    if arg.runlocal:  # seconds
        c.num_nodes = 5
        c.steps = 60
        c.learning_rate = 0.1
        c.log_every = 10
        c.variance_points = 2
        c.variance_replicas = 20
        c.pam_num_samples = 2_000
    return c
