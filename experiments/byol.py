r"""BYOL (Grill et al. 2020) on the embedded digits, and MoCo v2 (Chen, Fan, Girshick & He
2020) and v3 (Chen, Xie & He 2021) as variants, scored by the same frozen-feature probes as
experiments/simclr.py.

The data, augmentations, encoder, loop and probes are SimCLR's (experiments/simclr.py).
BYOL adds a predictor and a target network (encoder + projector), the EMA of the online
one in `state["extra"]["target"]`, its decay tau on the paper's cosine schedule from
tau_base = 0.996 to 1 over the run; the loss is the symmetric normalized MSE
(2 - 2 cos) between the online prediction of one view and the target projection of the
other, with no negatives. The heads are the paper's MLPs (Linear-BN-ReLU-Linear; hidden
4096 / out 256 in the paper, 256 / 128 here). Optimizer: LARS, weight decay 1.5e-6
(the paper's), SimCLR's square-root lr rule for this small batch. The probes score the
online encoder (the paper keeps f_theta).

MoCo v2 (`moco_v2`): no predictor; the query is the online projection of the first view,
the key the momentum encoder's projection of the second (m = tau_base = 0.99 constant,
one of the values MoCo's momentum ablation trains with, Sec. 4.1; its default 0.999 is for
200 epochs, this run is 1,200 steps); the
negatives a FIFO queue of K = 1,024 earlier keys (8 global batches) in `state["extra"]`,
InfoNCE at T 0.2; v2's head Linear-ReLU-Linear (no BatchNorm), 256 -> 128, and v2's blur
(SimCLR's, 3x3 on the digits, p 0.5) ending each view. Optimizer: the same LARS as BYOL
here (MoCo used SGD 0.03 x B/256 over 200 epochs, far too slow for 1,200 steps).

Launch:

  python -m ssl_gen.main --config=experiments/byol.py --workdir=runs/byol
  python -m ssl_gen.main --config=experiments/byol.py:moco_v3 --workdir=runs/moco_v3
  python -m ssl_gen.main --config=experiments/byol.py:moco_v2 --workdir=runs/moco_v2

Measured (seed 0, 1,200 steps, 360 test digits, 2 CPU cores at load ~2): BYOL (2 min 19 s)
few-shot 1/5/10/25 = 0.614/0.841/0.867/0.914, kNN k=10/20 0.969/0.969, linear probe 0.978;
MoCo v3 (3 min 54 s) 0.700/0.890/0.892/0.930, kNN 0.986/0.983, linear 0.981; against the
same baselines as SimCLR's (pixels: 0.775/0.830 at 5/10 shots, kNN20 0.975, linear 0.967;
random init 0.665/0.736, 0.858, 0.939). MoCo v2 (8 min 19 s at load ~4, seed 0, 1,200
steps) 0.693/0.880/0.901/0.931, kNN 0.969/0.969, linear 0.978, its own run's baselines
identical to those (pixels 0.563/0.775/0.830/0.866; random init 0.407/0.665/0.736/0.819,
kNN 0.883/0.858, linear 0.939).

Variants:
  digits     the default: BYOL on the 8x8 digits, batch 128, 1,200 steps
  moco_v3    MoCo v3: 3-layer projector, InfoNCE on momentum keys, T 0.2, tau_base 0.99
  moco_v2    MoCo v2: a queue of 1,024 keys in extra, m 0.99, T 0.2, no-BN head, blur
  blur       BYOL's asymmetric Gaussian blur ending the views (p 1.0 / 0.1; not moco_v2)
  runlocal   narrower encoder and heads, a few steps (seconds; the tests use it)

Override anything: `--config.objective.kwargs.tau_base=0.99 --config.num_train_steps=600`
(the schedule's horizon `objective.kwargs.total_steps` follows `num_train_steps`). The
target's weights can be probed too: add `weights="extra/target"` to an eval.
"""

import ml_collections

try:
    from experiments import simclr
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments import simclr
    from ssl_gen_experiments.common import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, moco_v3=False, moco_v2=False, blur=False, runlocal=False)
    if arg.moco_v2 and (arg.moco_v3 or arg.blur):
        raise ValueError("config arg: moco_v2 goes alone (it has its own blur)")
    c = ml_collections.ConfigDict()
    c.dataset = simclr.dataset(simclr.BLUR if arg.moco_v2 else
                               simclr.BYOL_BLUR if arg.blur else None)
    simclr.loop(c, 1_200, arg.runlocal)
    hidden, out = (32, 16) if arg.runlocal else (256, 128)
    c.model = ml_collections.ConfigDict(dict(name="contrastive", input_key="image", kwargs=dict(
        **(simclr.TINY_ENCODER if arg.runlocal else simclr.ENCODER),
        projector_hidden=hidden, projector_out=out, projector_layers=3 if arg.moco_v3 else 2,
        projector_norm=not arg.moco_v2,
        predictor_hidden=None if arg.moco_v2 else hidden, predictor_layers=2)))
    if arg.moco_v3:
        kwargs = dict(method="moco_v3", temperature=0.2, tau_base=0.99)
    elif arg.moco_v2:
        kwargs = dict(method="moco_v2", temperature=0.2, tau_base=0.99,
                      queue_size=128 if arg.runlocal else 1024)
    else:
        kwargs = dict(method="byol", tau_base=0.996)
    c.objective = ml_collections.ConfigDict(dict(name="contrastive", kwargs=dict(
        **kwargs, views_key="views")))
    c.objective.kwargs.total_steps = c.get_ref("num_train_steps")
    if arg.moco_v2:  # the keys enqueued per step: the global batch
        c.objective.kwargs.batch_size = c.get_ref("batch_size")
    c.optimizer = simclr.lars(c.batch_size, 1.5e-6, 2 if arg.runlocal else 120)
    return c
