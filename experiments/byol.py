r"""BYOL (Grill et al. 2020) on the embedded digits, and MoCo v3 (Chen, Xie & He 2021) as a
variant, scored by the same frozen-feature probes as experiments/simclr.py.

The data, augmentations, encoder, loop and probes are SimCLR's (experiments/simclr.py).
BYOL adds a predictor and a target network (encoder + projector), the EMA of the online
one in `state["extra"]["target"]`, its decay tau on the paper's cosine schedule from
tau_base = 0.996 to 1 over the run; the loss is the symmetric normalized MSE
(2 - 2 cos) between the online prediction of one view and the target projection of the
other, with no negatives. The heads are the paper's MLPs (Linear-BN-ReLU-Linear; hidden
4096 / out 256 in the paper, 256 / 128 here). Optimizer: LARS, weight decay 1.5e-6
(the paper's), SimCLR's square-root lr rule for this small batch. The probes score the
online encoder (the paper keeps f_theta).

Launch:

  python -m ssl_gen.main --config=experiments/byol.py --workdir=runs/byol
  python -m ssl_gen.main --config=experiments/byol.py:moco_v3 --workdir=runs/moco_v3

Measured (seed 0, 1,200 steps, 360 test digits, 2 CPU cores at load ~2): BYOL (2 min 19 s)
few-shot 1/5/10/25 = 0.614/0.841/0.867/0.914, kNN k=10/20 0.969/0.969, linear probe 0.978;
MoCo v3 (3 min 54 s) 0.700/0.890/0.892/0.930, kNN 0.986/0.983, linear 0.981; against the
same baselines as SimCLR's (pixels: 0.775/0.830 at 5/10 shots, kNN20 0.975, linear 0.967;
random init 0.665/0.736, 0.858, 0.939).

Variants:
  digits     the default: BYOL on the 8x8 digits, batch 128, 1,200 steps
  moco_v3    MoCo v3: 3-layer projector, InfoNCE on momentum keys, T 0.2, tau_base 0.99
  runlocal   narrower encoder and heads, a few steps (seconds; the tests use it)

Override anything: `--config.objective.kwargs.tau_base=0.99 --config.num_train_steps=600`
(the schedule's horizon `objective.kwargs.total_steps` follows `num_train_steps`). The
target's weights can be probed too: add `weights="extra/target"` to an eval.
"""

import ml_collections

try:
    from experiments.common import parse_arg
    from experiments.simclr import ENCODER, TINY_ENCODER, dataset, lars, loop
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg
    from ssl_gen_experiments.simclr import ENCODER, TINY_ENCODER, dataset, lars, loop


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, moco_v3=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.dataset = dataset()
    loop(c, 1_200, arg.runlocal)
    hidden, out = (32, 16) if arg.runlocal else (256, 128)
    c.model = ml_collections.ConfigDict(dict(name="contrastive", input_key="image", kwargs=dict(
        **(TINY_ENCODER if arg.runlocal else ENCODER),
        projector_hidden=hidden, projector_out=out, projector_layers=3 if arg.moco_v3 else 2,
        predictor_hidden=hidden, predictor_layers=2)))
    if arg.moco_v3:
        kwargs = dict(method="moco_v3", temperature=0.2, tau_base=0.99)
    else:
        kwargs = dict(method="byol", tau_base=0.996)
    c.objective = ml_collections.ConfigDict(dict(name="contrastive", kwargs=dict(
        **kwargs, views_key="views")))
    c.objective.kwargs.total_steps = c.get_ref("num_train_steps")
    c.optimizer = lars(c.batch_size, 1.5e-6, 2 if arg.runlocal else 120)
    return c
