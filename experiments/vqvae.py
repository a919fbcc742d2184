r"""VQ-VAE on the digits, K = 256 codes: EMA codebook with dead-code restart.

A conv encoder maps each 8x8 digit to a 4x4 grid of 16-dim vectors, each replaced by the
nearest of 256 codes (EMA codebook, decay 0.99, beta = 0.25); a conv decoder reconstructs
the digit (`ssl_gen.models.vqvae`, `ssl_gen.objectives.vqvae`). Each eval reports the test
MSE (grey levels scaled to [0, 1]) and the codes used over the whole test split, next to the
mean-image and random-initialization baselines (`ssl_gen.evals.codebook`).

Launch:

  python -m ssl_gen.main --config=experiments/vqvae.py --workdir=runs/vqvae

Variants:
  no_restart  plain EMA, no dead-code restart (half the codebook stays dead)
  kmeans      restart and a k-means initialization from the first batch
  vq          the codebook trained by the loss (codebook + beta * commitment), no EMA
  fsq         finite scalar quantization, levels (8, 8, 4) = 256 codes, no codebook loss
  mnist       tfds `mnist` (prepare it first): 28x28 to a 7x7 grid of K = 512 codes
  runlocal    tiny model, few steps (combine: `no_restart,runlocal`)

`:mnist` is for users who have tfds `mnist` prepared (`tfds build mnist --data_dir=DIR
--file_format=array_record` where there is network; nothing is downloaded at run time):
Sonnet's VQ-VAE architecture (128 hidden, 2 stride-2 downsamplings, D = 64, K = 512; the
`sonnet` variant of `ssl_gen.models.vqvae`), EMA with restart, batch 128, 20,000 steps
(~43 epochs of 60,000 digits):

  python -m ssl_gen.main --config=experiments/vqvae.py:mnist --workdir=runs/vqvae_mnist \
    --config.dataset.data_dir=DIR

then `experiments/vq_prior.py:mnist,stage1=runs/vqvae_mnist` (same data_dir).

Override anything: `--config.num_train_steps=6000 --config.model.kwargs.dead_threshold=0.5`.

Measured (3,000 steps, ~2.5 CPU-minutes each; test split: MSE in [0, 1] units, codes used of
256; mean-image baseline 0.074, random init 0.234):

  default (restart)   seed 0: 0.0027, 256    seed 1: 0.0029, 256
  no_restart          seed 0: 0.0031, 132    seed 1: 0.0030, 151   (36 per batch at step 100)
  kmeans              seed 0: 0.0028, 256
  vq                  seed 0: 0.0045, 66
  fsq                 seed 0: 0.0032, 253
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, no_restart=False, kmeans=False, vq=False, fsq=False, mnist=False,
                    runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=()))
    c.batch_size = 64  # 64 digits x 16 positions = 1,024 vectors per step for 256 codes
    c.eval_batch_size = 120  # 360 test digits = 3 batches
    c.num_train_steps = 3_000

    c.model = ml_collections.ConfigDict(dict(name="vqvae", input_key="image", kwargs=dict(
        image_shape=(8, 8, 1), data_range=(0.0, 16.0), variant="digits",
        quantizer="ema", num_codes=256, beta=0.25, decay=0.99,
        restart=not arg.no_restart,
        # Debiased EMA count (assignments per step) below which a code is dead: 1 of 1,024
        # vectors per step, a quarter of a uniform share (Jukebox restarts below 1 too).
        dead_threshold=1.0, kmeans_init=arg.kmeans)))
    c.objective = ml_collections.ConfigDict(dict(name="vqvae", kwargs=dict(input_key="image")))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
        end_lr_factor=0.1))
    c.evals = ml_collections.ConfigDict(dict(
        codebook=dict(every_steps=500, kwargs=dict(field="image"))))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 1_000
    c.keep_checkpoints = 3
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True

    if arg.vq:
        c.model.kwargs.update(quantizer="vq", restart=False, kmeans_init=False)
    if arg.fsq:
        c.model.kwargs.update(quantizer="fsq", restart=False, kmeans_init=False,
                              fsq_levels=(8, 8, 4))
    if arg.mnist:
        c.dataset.name = "mnist"
        c.model.kwargs.update(image_shape=(28, 28, 1), data_range=(0.0, 255.0),
                              variant="sonnet", num_codes=512)
        c.batch_size = 128  # 128 digits x 49 positions = 6,272 vectors per step
        c.eval_batch_size = 500  # 10,000 test digits = 20 batches
        c.num_train_steps = 20_000
        c.optimizer.warmup_steps = 500
        c.evals.codebook.every_steps = 2_000
        c.checkpoint_every_steps = 2_000
    if arg.runlocal:
        c.batch_size = 32
        c.num_train_steps = 20
        c.model.kwargs.update(variant="tiny", num_codes=16)
        c.evals.codebook.every_steps = 10
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
