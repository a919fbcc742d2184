r"""VQGAN on the embedded photo crops: residual autoencoder, EMA codebook, PatchGAN.

32x32 RGB crops of ten photographs (`labelled_photos`, 10,000 train / 2,000 test crops from
disjoint regions of each photo). The encoder maps a crop to an 8x8 grid of 32-dim vectors,
each replaced by the nearest of K = 512 codes (EMA codebook with dead-code restart); the
decoder reconstructs it; a PatchGAN discriminator scores 6x6 overlapping patches
(`ssl_gen.models.vqgan`). Two parts per step, generator then discriminator
(`ssl_gen.objectives.vqgan`): L1 + (1 - SSIM) + the adaptive-weighted hinge GAN term +
the VQ loss, the GAN term from `disc_start` on, the discriminator warmed up for
`disc_warmup` steps before it. Each eval reports the test MSE / PSNR / SSIM and writes a
reconstruction grid (`ssl_gen.evals.reconstruction`, `plots/reconstructions_latest.png`),
and the codes used over the whole test split with the mean-image and random-init
baselines (`ssl_gen.evals.codebook`); `metrics.jsonl` holds their curves over the run.

Launch:

  python -m ssl_gen.main --config=experiments/vqgan.py --workdir=runs/vqgan
  python -m ssl_gen.main --config=experiments/vqgan.py:no_gan --workdir=runs/vqgan_no_gan

Variants:
  no_gan      the same autoencoder and losses without the GAN term (disc_weight 0)
  cifar10     tfds `cifar10` (prepare it first): a 4x wider model, K = 1024, 100k steps
  runlocal    tiny model, few steps (combine: `no_gan,runlocal`)

`:cifar10` is for users who have tfds `cifar10` prepared (`tfds build cifar10 --data_dir=DIR
--file_format=array_record` where there is network) and an accelerator: the same f = 4
layout (an 8x8 grid of codes per 32x32 image) at ch 64 with 2 residual blocks a level,
D = 64, K = 1024, discriminator ndf 64; batch 64, 100,000 steps (128 epochs), the GAN term
from step 30,000:

  python -m ssl_gen.main --config=experiments/vqgan.py:cifar10 --workdir=runs/vqgan_cifar10 \
    --config.dataset.data_dir=DIR

then `experiments/vq_prior.py:cifar10,stage1=runs/vqgan_cifar10` (same data_dir).

Override anything: `--config.num_train_steps=20000 --config.objective.kwargs.perceptual=
fourier_l1 --config.objective.kwargs.disc_start=5000`.

Measured (6,000 steps, 9.6 epochs, seed 0; both runs side by side niced on a 2-core CPU
with other jobs, ~55 wall-minutes each; test split, 2,000 crops; MSE ([0, 1] units), PSNR
and SSIM of the reconstruction clipped to [0, 1] and the gradient ratio, its edge energy
over the data's (`ssl_gen.evals.reconstruction`); codes used of 512 over the whole split
(`ssl_gen.evals.codebook`); mean-image baseline MSE 0.094, random init 0.648 (unclipped)
and 438 codes):

                      MSE      PSNR (dB)  SSIM    gradient ratio  codes used  perplexity
  default (GAN)       0.0045   24.92      0.785   0.948           512         384
  no_gan              0.0034   26.09      0.843   0.719           512         393

The GAN term trades pixel fidelity for sharpness, as it should: the no-GAN autoencoder's
reconstructions keep 72 % of the data's edge energy (blur: the mean of the plausible crops
minimizes L1 and MSE), the VQGAN's 95 %, at a cost of 1.2 dB PSNR. The adaptive weight
peaked ~0.6 just after the GAN term started (step 1,500) and settled ~0.1; the
discriminator's accuracy rose from 0.5 to ~0.65. Every code stayed in use at every eval
(the restart's work; 511 at step 3,000). Grids: docs/images/vqgan{,_no_gan}_photos_
reconstructions.png. At 400 steps (the first version of this config) the GAN run was behind
on every metric (MSE 0.0287 vs 0.0264): the term needs a trained autoencoder to refine.

Stage 2: `experiments/vq_prior.py:photos,stage1=DIR` (and `:cifar10`) trains the GPT prior
over this run's codes (`ssl_gen.models.vq_prior` with `stage1_model="vqgan"`, this config's
model kwargs as `stage1`, init_from mapping {"vqvae": ""}).
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def _adam(lr):
    # taming: Adam(lr, betas=(0.5, 0.9)) for both the autoencoder and the discriminator.
    return ml_collections.ConfigDict(dict(name="adam", learning_rate=lr, b1=0.5, b2=0.9))


def get_config(arg=None):
    arg = parse_arg(arg, no_gan=False, cifar10=False, runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="labelled_photos", data_dir=placeholder(str), train_split="train",
        eval_split="test", preprocess=()))  # raw 0..255: the model maps its data_range
    c.batch_size = 16  # 16 crops x 64 positions = 1,024 vectors per step for 512 codes
    c.eval_batch_size = 200  # 2,000 test crops = 10 batches
    c.num_train_steps = 6000  # 9.6 epochs: ~55 wall-minutes here beside the no_gan run

    c.model = ml_collections.ConfigDict(dict(name="vqgan", input_key="image", kwargs=dict(
        image_shape=(32, 32, 3), data_range=(0.0, 255.0), variant="photos",
        quantizer="ema", num_codes=512, beta=0.25, decay=0.99, restart=True,
        dead_threshold=1.0)))  # restart below 1 of 1,024 vectors per step (experiments/vqvae)
    c.objective = ml_collections.ConfigDict(dict(name="vqgan", kwargs=dict(
        loss="hinge", perceptual="ssim", l1_weight=1.0, perceptual_weight=1.0,
        disc_weight=0.0 if arg.no_gan else 0.8,  # taming's disc_weight 0.8
        # The GAN term after the first 1,500 steps, once reconstructions are fair (taming
        # starts it late too: disc_start 250k of ImageNet training); the discriminator 50
        # steps earlier, so its first gradients to the generator are not a random network's.
        disc_start=1500, disc_warmup=50, adaptive=True, max_adaptive_weight=1e4,
        r1_weight=0.0, input_key="image")))
    # taming scales base_lr 4.5e-6 by batch and GPUs (x 12 x 8 = 4.3e-4 for its ImageNet runs).
    c.optimizer = _adam(2e-4)
    c.parts = ml_collections.ConfigDict(dict(
        generator=dict(optimizer=_adam(2e-4)),
        discriminator=dict(optimizer=_adam(2e-4))))
    if arg.no_gan:  # the discriminator never trains (its part never starts)
        c.parts.discriminator.start_step = 10**9
    c.evals = ml_collections.ConfigDict(dict(
        reconstruction=dict(every_steps=1000, kwargs=dict(field="image", num=16)),
        codebook=dict(every_steps=1000, kwargs=dict(field="image"))))
    c.log_every_steps = 25
    c.checkpoint_every_steps = 1000
    c.keep_checkpoints = 1
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True
    if arg.cifar10:
        c.dataset.name = "cifar10"
        c.model.kwargs.update(variant="cifar10", num_codes=1024)  # ssl_gen.models.vqgan
        c.batch_size = 64  # 64 images x 64 positions = 4,096 vectors per step
        c.eval_batch_size = 500  # 10,000 test images = 20 batches
        c.num_train_steps = 100_000
        c.objective.kwargs.update(disc_start=30_000, disc_warmup=1_000)
        c.evals.reconstruction.every_steps = 10_000
        c.evals.codebook.every_steps = 5_000
        c.log_every_steps = 200
        c.checkpoint_every_steps = 5_000
    if arg.runlocal:
        c.batch_size = 8
        c.num_train_steps = 10
        # tiny at f = 4 (one more downsampling), the 8x8 code grid of the full config
        c.model.kwargs.update(variant="tiny", ch_mult=(1, 2, 2), num_codes=16)
        c.objective.kwargs.update(disc_start=4, disc_warmup=2)
        c.evals.reconstruction.update(every_steps=5)
        c.evals.reconstruction.kwargs.num = 8
        c.evals.codebook.every_steps = 5
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
