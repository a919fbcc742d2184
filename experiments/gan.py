r"""A GAN on the digits: MLP generator and discriminator, alternating updates in one step.

The reference two-part objective of `ssl_gen.train` (`ssl_gen.objectives.gan`): each step
updates the discriminator, then the generator against the updated discriminator, each with
its own Adam (lr 2e-4, b1 = 0.5: Radford et al. 2016, "DCGAN", Sec. 4). Sample quality is the
kernel two-sample distance MMD² to the test digits, next to the training digits' MMD² (the
floor) and uniform noise's (`ssl_gen.evals.two_sample`).

Launch:

  python -m ssl_gen.train.main --config=experiments/gan.py --workdir=runs/gan

Variants:
  hinge             hinge losses instead of the non-saturating ones
  runlocal          tiny model, few steps (combine: `hinge,runlocal`)

A late discriminator start or n-critic is config:
`--config.parts.discriminator.start_step=500 --config.parts.generator.every=5`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def _adam():
    return ml_collections.ConfigDict(dict(name="adam", learning_rate=2e-4, b1=0.5, b2=0.999))


def get_config(arg=None):
    arg = parse_arg(arg, hinge=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        dynamic_binarization=False))
    c.batch_size = 64
    c.eval_batch_size = 120
    c.num_train_steps = 5_000
    c.model = ml_collections.ConfigDict(dict(name="gan", input_key="image", kwargs=dict(
        data_shape=(8, 8, 1), data_range=(0.0, 16.0), latent_dim=32,
        generator_hidden=(256, 256), discriminator_hidden=(256, 256))))
    c.objective = ml_collections.ConfigDict(dict(name="gan", kwargs=dict(
        loss="hinge" if arg.hinge else "non_saturating", r1_weight=0.0, input_key="image")))
    # Used by a part without its own `optimizer` (both have one here).
    c.optimizer = _adam()
    c.parts = ml_collections.ConfigDict(dict(
        discriminator=dict(optimizer=_adam(), start_step=0, every=1),
        generator=dict(optimizer=_adam(), start_step=0, every=1)))
    c.evals = ml_collections.ConfigDict(dict(
        two_sample=dict(every_steps=1_000, kwargs=dict(num=360))))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1_000
    c.keep_checkpoints = 3
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if arg.runlocal:
        c.batch_size = 32
        c.num_train_steps = 20
        c.model.kwargs.update(latent_dim=4, generator_hidden=(16,), discriminator_hidden=(16,))
        c.evals.two_sample.update(every_steps=10, kwargs=dict(num=64))
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
