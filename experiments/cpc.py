r"""CPC pre-training (van den Oord et al. 2018) on the embedded MNIST-1D, scored by probes.

The 40-step MNIST-1D signals (Greydanus 2020; the canonical 4,000 / 1,000 split, already
about zero-mean and unit-variance, so no preprocessing) go through three causal strided
convolutions (40 steps -> 10 frames of 4 with no overlap, 64-wide latents z_t) and a
128-wide GRU (c_t); W_k c_t predicts z_{t+k} for k = 1..3 and the InfoNCE loss
(`ssl_gen.objectives.cpc`) picks each true z_{t+k} among the latents of the batch's 128
sequences at the same frame (`negatives="batch"`, N = 128; with `"both"`, every frame of
every sequence, N = 128 (10 - k), its linear probe reached 0.794 against batch's 0.826,
same seed and steps). The representation is the context averaged over the frames
(`cpc.Model.features`, `pool="mean"`: under the same linear probe it beat the last frame's
context at initialization, 0.74 against 0.48, and after 1,500 steps with batch negatives,
0.81 against 0.62), scored at the end by few-shot ridge regression (1/5/10/25 shots), a
weighted kNN and a linear probe, each next to the same probe on the raw 40-step signal and
on the randomly initialized encoder (`ssl_gen.evals.representation`). The published
MNIST-1D baselines (Greydanus 2020, Table 1) are logistic regression 32 % and an MLP 68 %
on the raw signal.
Measured (1,000 test signals, 4 minutes here): linear probe 0.826 against the raw signal's
0.330 and the random-init encoder's 0.745; the README has the whole table.

Launch:

  python -m ssl_gen.main --config=experiments/cpc.py --workdir=runs/cpc
  python -m ssl_gen.main --config=experiments/cpc.py:digits_grid --workdir=runs/cpc_grid

Variants:
  mnist1d      the default: the mnist1d variant of models.cpc, a GRU context
  digits_grid  CPC v2-style patch grid on the 8x8 digits (models.cpc_grid, 3x3 patches)
  runlocal     the tiny model, a few steps (seconds; the tests use it)

`digits_grid` (Hénaff et al. 2020's patch grid, `ssl_gen.models.cpc_grid`): each 8x8
digit (grey levels / 16) cut into a 6x6 grid of overlapping 3x3 patches (stride 1), a
patch MLP (64, 64) -> z_{i,j}, a 2-block transformer masked to the rows at and above each
patch ("rows" order: the PixelCNN-style receptive field of CPC's context) -> c_{i,j}, and
W_k c_{i,j} predicting z_{i+k,j} for k = 3, 4, 5 (the first rows sharing no pixel with the
context), against the same position of every digit in the batch (`negatives="batch"`,
N = 128; "both", every position of every digit, N = 2,304 at k = 3, ran at 1.3 steps/s
here), 800 steps at batch 128 (71 epochs of the 1,437 training digits). The
probes read the patch encodings concatenated over the grid (`pool="z_grid"`; CPC v2 reads
the encoder, mean-pooled, but a mean over an 8x8 digit's patches forgets where each
stroke is).
Measured (seed 0, 800 steps, 7 min 36 s at load ~8; 360 test digits): few-shot 1/5/10/25
= 0.629/0.852/0.890/0.945, kNN k=10/20 0.981/0.969, linear probe 0.967; raw pixels
0.563/0.775/0.830/0.866, 0.978/0.975, 0.967; the random-init model 0.628/0.852/0.889/0.938,
0.975/0.964, 0.961. CPC adds next to nothing to its random patch features here (2,304
random ReLU features of 3x3 patches are already as good as the pixels); the same
checkpoint under the same linear probe with the other poolings: z_mean 0.922 (random
init 0.906), c_mean 0.903 (0.933).

Options: `--config.objective.kwargs.negatives=both` (every frame of every sequence) or
`time` (other frames of the same sequence); `--config.model.kwargs.context=transformer`
(a 2-block causal transformer instead of the GRU); `--config.model.kwargs.pool=last`
(the context at the last frame, the paper's c_t, as features).
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
    from experiments.mae import probes
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg
    from ssl_gen_experiments.mae import probes


def get_config(arg=None):
    arg = parse_arg(arg, mnist1d=False, digits_grid=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="mnist1d", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=()))
    if arg.digits_grid:
        c.dataset.name = "digits"
        c.dataset.preprocess = ({"name": "normalize", "scale": 1 / 16},)
    c.batch_size = 128
    c.eval_batch_size = 200
    # 1,500 steps = 48 epochs of the 4,000 training signals (about 10 minutes on two shared
    # CPU cores).
    c.num_train_steps = 1_500

    c.model = ml_collections.ConfigDict(dict(name="cpc", input_key="x", kwargs=dict(
        variant="tiny" if arg.runlocal else "mnist1d", context="gru", pool="mean")))
    c.objective = ml_collections.ConfigDict(dict(name="cpc", kwargs=dict(
        negatives="batch", input_key="x")))
    if arg.digits_grid:
        c.model = ml_collections.ConfigDict(dict(name="cpc_grid", input_key="image", kwargs=dict(
            variant="tiny" if arg.runlocal else "digits", order="rows", pool="z_grid")))
        c.objective.kwargs = dict(negatives="batch", input_key="image")
        c.num_train_steps = 800

    # The paper trains with Adam at lr 2e-4 (Sec. 3.1, audio); a short run on a small model
    # takes a larger one, warmed up then cosine-decayed.
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, b1=0.9, b2=0.999, weight_decay=1e-4,
        weight_decay_mask="no_bias_norm", schedule="warmup_cosine", warmup_steps=100,
        end_lr_factor=0.0, grad_clip_norm=1.0))

    c.evals = probes(c.num_train_steps, runlocal=arg.runlocal)
    for ev in c.evals.values():
        ev.kwargs.field = "image" if arg.digits_grid else "x"
    c.log_every_steps = 100
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if arg.runlocal:
        c.batch_size = 16
        c.num_train_steps = 20
        for ev in c.evals.values():
            ev.every_steps = 10
            if not arg.digits_grid:
                ev.kwargs.num_train = 500
                ev.kwargs.num_test = 200
        c.evals.few_shot.kwargs.shots = (1, 5)
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
