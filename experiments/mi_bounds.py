r"""Variational MI bounds on correlated Gaussians (Poole et al. 2019, Fig. 2).

Not a trainer config: `config.runner` names the runner that launches it (the trainer's
config tests skip it; tests/runners/test_mi_bounds.py runs its runlocal variant).

  python -m ssl_gen.runners.mi_bounds --config=experiments/mi_bounds.py \
      --workdir=runs/mi_bounds

d = 20, batch N = 64, the true MI stepped 2 -> 4 -> 6 -> 8 -> 10 nats (rho from
MI = -(d/2) log(1 - rho^2)), separable and joint critics trained by Adam per bound: NWJ,
TUBA, InfoNCE, JS and the interpolated bound at three alphas. The default is the paper's
colab scale (20,000 steps per (critic, bound), 256-unit critics): minutes on an
accelerator, hours on a CPU.

Without an arg: the colab's scale, 4,000 steps per MI, critics 2 x 256 (embed 32), lr 5e-4.

Variants:
  cpu           minutes on a CPU (3.7 CPU-min measured): 300 steps per MI, critics 2 x 64
  runlocal      seconds: 3 MIs, 20 steps, tiny critics, three bounds (combine: `cpu,runlocal`)

The workdir gets report.md (the tables, also printed), rows.json, estimates.npz (every
step's estimate) and the PNGs. Override anything, e.g. `--config.critics=joint
--config.steps_per_mi=1000 --config.bounds.alpha_0_5.alpha=0.2`.
"""

import ml_collections

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def _bounds(**specs):
    """name -> {"bound": one of ssl_gen.objectives.mi_bounds.BOUNDS, "alpha": (I_alpha)}."""
    return ml_collections.ConfigDict({k: dict(v) for k, v in specs.items()}, sort_keys=False)


def get_config(arg=None):
    arg = parse_arg(arg, cpu=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.runner = "mi_bounds"  # ssl_gen.runners.mi_bounds, not the trainer
    c.seed = 0
    # Poole et al. (2019), Sec. 4 and their colab: x, y in R^20, batches of 64, the true
    # MI in steps of 2 nats (the colab's mi_schedule), Adam at 5e-4, 20,000 steps in all.
    c.dim = 20
    c.batch_size = 64
    c.mis = (2.0, 4.0, 6.0, 8.0, 10.0)
    c.steps_per_mi = 4_000
    c.learning_rate = 5e-4
    c.summary_fraction = 0.5  # a stage's estimate: the mean over its last half
    c.critics = "separable,joint"  # ssl_gen.models.critics.KINDS, comma-separated
    c.critic = ml_collections.ConfigDict(dict(hidden=(256, 256), embed_dim=32))
    c.baseline = ml_collections.ConfigDict(dict(hidden=(512, 512)))  # log a(y), TUBA/I_alpha
    c.optimal_batches = 256  # batches for the closed-form optimal critic's table
    # The colab's interpolated bounds use alpha_logit -5, 0, 5 (alpha 0.007, 0.5, 0.993).
    c.bounds = _bounds(
        nwj=dict(bound="nwj"),
        tuba=dict(bound="tuba"),
        infonce=dict(bound="infonce"),
        js=dict(bound="js"),
        alpha_0_01=dict(bound="interpolated", alpha=0.01),
        alpha_0_5=dict(bound="interpolated", alpha=0.5),
        alpha_0_99=dict(bound="interpolated", alpha=0.99))

    if arg.cpu:  # 3.7 CPU-minutes (9.6 min wall on 2 busy cores); the critics lag the truth
        c.steps_per_mi = 300
        c.learning_rate = 1e-3
        c.critic.hidden = (64, 64)
        c.baseline.hidden = (64, 64)
    if arg.runlocal:  # seconds: the smoke test of tests/runners/test_mi_bounds.py
        c.batch_size = 16
        c.mis = (2.0, 6.0, 10.0)
        c.steps_per_mi = 20
        c.critic = ml_collections.ConfigDict(dict(hidden=(16,), embed_dim=8))
        c.baseline.hidden = (16,)
        c.optimal_batches = 16
        c.bounds = _bounds(
            nwj=dict(bound="nwj"),
            infonce=dict(bound="infonce"),
            alpha_0_5=dict(bound="interpolated", alpha=0.5))
    return c
