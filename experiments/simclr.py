r"""SimCLR (Chen et al. 2020) on the embedded digits, scored by frozen-feature probes.

Two augmented views of each digit (`views` of a random resized crop and a brightness /
contrast jitter, made in the grain workers, deterministic in seed / epoch / example), a
small residual conv encoder (a 24-channel stem, stages of 48 and 96 channels, 8x8 -> 4x4
-> 2x2, 96-d features) with SimCLR's 2-layer projection head (Linear-BN-ReLU-Linear,
256 -> 128), NT-Xent at temperature 0.5 (the paper's CIFAR-10 setting, Table 5) with the
negatives of the whole global batch (2 x 128 - 2 per anchor). Optimizer: LARS as the paper
(momentum 0.9, weight decay 1e-6, neither decay nor trust-ratio scaling on biases and
BatchNorm parameters, linear warmup then cosine decay per step) with its square-root
learning-rate rule for small batches, 0.075 sqrt(batch). The representation is the
encoder's output before the head (the paper's Sec. 4.2: better than the projection),
scored every 600 steps and at the end by few-shot ridge regression (1/5/10/25 shots), a
weighted kNN and a linear probe, each next to the same probe on raw pixels and on the
randomly initialized encoder.

Launch:

  python -m ssl_gen.main --config=experiments/simclr.py --workdir=runs/simclr

Measured (seed 0, 1,200 steps, 2 min 27 s on 2 CPU cores at load ~2; 360 test digits):
few-shot 1/5/10/25 = 0.755/0.891/0.917/0.945 (raw pixels 0.563/0.775/0.830/0.866, random-init
encoder 0.407/0.665/0.736/0.819), kNN k=10/20 0.983/0.975 (pixels 0.978/0.975), linear probe
0.983 (pixels 0.967, random init 0.939).

Variants:
  digits     the default: 8x8 digits, batch 128, 1,200 steps (~107 epochs)
  blur       the views end with SimCLR's Gaussian blur (3x3 kernel, sigma U[0.1, 2], p 0.5)
  photos     `labelled_photos` (32x32 RGB crops of ten photos), SimCLR's full augmentation
  runlocal   narrower encoder and head, a few steps (seconds; the tests use it)

`:photos` trains on the embedded natural-image set (10,000 crops of ten photographs, test
crops from disjoint regions; the probes classify a crop's photograph) with SimCLR's whole
augmentation list (Appendix A): random resized crops of 8-100 %, flips, colour jitter
(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale with p 0.2, the blur (SimCLR's kernel rule: 3x3 at
32 px) with p 0.5; a wider encoder (stem 32, stages 64 and 128: 32 -> 16 -> 8), 1,500 steps:

  python -m ssl_gen.main --config=experiments/simclr.py:photos --workdir=runs/simclr_photos

Measured (seed 0, 1,500 steps, ~45 min at load 3-10; 2,000 test crops): linear probe 0.803
(raw pixels 0.462, random-init encoder 0.731), kNN k=10 0.791 (0.564, 0.756), few-shot
1/5/10/25 0.471/0.486/0.519/0.596 (pixels 0.268/0.393/0.406/0.430, random init
0.285/0.429/0.468/0.511).

Augmentations (digits): no flip (a mirrored digit is often another digit or none), crops of at least
35 % of the 8x8 image (SimCLR's 8 % would leave 2x2 pixels), brightness and contrast
jitter 0.4 (saturation and hue mean nothing on one grey channel). Override anything:
`--config.objective.kwargs.temperature=0.2 --config.num_train_steps=1000`
(the tau-schedule horizon `objective.kwargs.total_steps` follows `num_train_steps`).
"""

import ml_collections
from ml_collections.config_dict import FieldReference, placeholder

try:
    from experiments.common import parse_arg
    from experiments.mae import probes
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg
    from ssl_gen_experiments.mae import probes

# SimCLR's augmentations cut down to 8x8 grey digits (see the docstring).
AUGMENT = (
    {"name": "random_resized_crop", "size": 8, "scale": (0.35, 1.0)},
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.0,
     "hue": 0.0, "p": 0.8},
)
# SimCLR's Gaussian blur (Appendix A: sigma ~ U[0.1, 2], p 0.5), a 3x3 kernel on 8x8 digits
# (the paper's 10 %-of-the-side rule gives 1x1, no blur, below 20 pixels); BYOL's views blur
# asymmetrically, p 1.0 and 0.1 (Grill et al. 2020, Table 6).
BLUR = {"name": "gaussian_blur", "kernel_size": 3, "sigma": (0.1, 2.0), "p": 0.5}
BYOL_BLUR = dict(BLUR, p=(1.0, 0.1))
ENCODER = dict(stem_width=24, widths=(48, 96), blocks=1)
# `:photos`: SimCLR's augmentations as the paper has them (Appendix A), on 32x32 RGB crops.
PHOTO_AUGMENT = (
    {"name": "random_resized_crop", "size": 32, "scale": (0.08, 1.0)},
    {"name": "flip"},
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "saturation": 0.4,
     "hue": 0.1, "p": 0.8},
    {"name": "grayscale", "p": 0.2},
    {"name": "gaussian_blur", "sigma": (0.1, 2.0), "p": 0.5},
)
PHOTO_ENCODER = dict(stem_width=32, widths=(64, 128), blocks=1)
TINY_ENCODER = dict(stem_width=8, widths=(8, 16), blocks=1)


def dataset(blur=None, photos: bool = False) -> ml_collections.ConfigDict:
    """Digits in [0, 1] (grey levels / 16) with two augmented views in `views` (`AUGMENT`,
    then the `blur` op when given); the probes read `image`, the unaugmented digit
    (evaluation skips the random ops). `photos`: `labelled_photos` / 255, `PHOTO_AUGMENT`."""
    if photos:
        return ml_collections.ConfigDict(dict(
            name="labelled_photos", data_dir=placeholder(str), train_split="train",
            eval_split="test", preprocess=(
                {"name": "normalize", "scale": 1 / 255},
                {"name": "views", "ops": PHOTO_AUGMENT, "num": 2, "out": "views"})))
    ops = AUGMENT + ((blur,) if blur else ())
    return ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=({"name": "normalize", "scale": 1 / 16},
                    {"name": "views", "ops": ops, "num": 2, "out": "views"})))


def loop(c: ml_collections.ConfigDict, steps: int, runlocal: bool) -> None:
    """The loop settings shared with experiments/byol.py; `num_train_steps` a reference the
    objective's `total_steps` follows."""
    c.seed = 0
    c.batch_size = 128
    c.eval_batch_size = 120
    c.num_train_steps = FieldReference(steps)
    every = 600
    c.evals = probes(every, runlocal=runlocal)
    c.log_every_steps = 100
    c.checkpoint_every_steps = 600
    c.keep_checkpoints = 2
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if runlocal:
        c.batch_size = 32
        c.num_train_steps = 20
        for ev in c.evals.values():
            ev.every_steps = 10
        c.evals.few_shot.kwargs.shots = (1, 5)
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10


def lars(batch_size: int, weight_decay: float, warmup_steps: int):
    """LARS (You et al. 2017) as SimCLR / BYOL use it, with SimCLR's square-root scaling for
    small batches and short runs (Appendix B.1): lr = 0.075 sqrt(batch); no decay and no
    trust-ratio scaling on biases and BatchNorm parameters; warmup then cosine."""
    return ml_collections.ConfigDict(dict(
        name="lars", learning_rate=0.075 * batch_size ** 0.5, momentum=0.9,
        weight_decay=weight_decay, weight_decay_mask="no_bias_norm", trust_coefficient=0.001,
        schedule="warmup_cosine", warmup_steps=warmup_steps, end_lr_factor=0.0))


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, blur=False, photos=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.dataset = dataset(BLUR if arg.blur else None, photos=arg.photos)
    loop(c, 1_500 if arg.photos else 1_200, arg.runlocal)
    if arg.photos:
        c.eval_batch_size = 200
    encoder = TINY_ENCODER if arg.runlocal else PHOTO_ENCODER if arg.photos else ENCODER
    c.model = ml_collections.ConfigDict(dict(name="contrastive", input_key="image", kwargs=dict(
        **encoder,
        projector_hidden=32 if arg.runlocal else 256, projector_out=16 if arg.runlocal else 128,
        projector_layers=2, predictor_hidden=None)))
    c.objective = ml_collections.ConfigDict(dict(name="contrastive", kwargs=dict(
        method="simclr", temperature=0.5, views_key="views")))
    c.objective.kwargs.total_steps = c.get_ref("num_train_steps")
    # SimCLR (Appendix B.1, B.9 and its code): LARS, wd 1e-6, warmup 10 % of the steps; the
    # square-root lr rule (0.075 sqrt(128) = 0.85): the linear rule's 0.3 x 128 / 256 = 0.15
    # moves each layer by ~0.15 % a step, too slow for 1,200 steps.
    c.optimizer = lars(c.batch_size, 1e-6, 2 if arg.runlocal else 150 if arg.photos else 120)
    return c
