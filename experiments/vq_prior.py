r"""Stage 2: a GPT prior over a frozen VQ-VAE's or VQGAN's codes (the digits by default).

The stage-1 autoencoder (`experiments/vqvae.py`) is loaded from its run's newest checkpoint
through `config.init_from` (mapping {"vqvae": ""}: its whole tree, EMA codebook included,
under this model's `vqvae/`) and stays frozen: the objective's one part owns only the
GPT's parameters (`ssl_gen.objectives.prior`, `ssl_gen.models.vq_prior`). Each step
encodes its batch of digits to codes and trains the GPT on next-code cross entropy. Each
eval reports the test-split NLL (nats per image, bits per code) next to the unigram,
position-unigram and uniform (log K) baselines, and writes a figure of decoded samples
(`ssl_gen.evals.prior`, `plots/prior_samples_latest.png`); the final eval adds the
MMD² of 360 decoded samples to the test digits, with its train-split floor and noise
baseline (`ssl_gen.evals.two_sample`).

Launch (stage 1, then stage 2 from that workdir):

  python -m ssl_gen.main --config=experiments/vqvae.py --workdir=runs/vqvae
  python -m ssl_gen.main --config=experiments/vq_prior.py:stage1=runs/vqvae \
    --workdir=runs/vq_prior

Arguments:
  stage1=DIR  the stage-1 run to load; its config must be the stage-1 config of the chosen
              data (the prior rebuilds that model to load it): experiments/vqvae.py's
              default, or vqgan.py for `photos`, vqvae.py:mnist, vqgan.py:cifar10. Always
              give it: without it the autoencoder stays at its random initialization (the
              prior then models an untrained encoder's codes), which only smoke tests want
              (the config tests validate and run every config without a prior run).

Variants:
  maskgit     MaskGIT instead of the GPT: masked-code training, parallel decoding (below)
  photos      the prior over experiments/vqgan.py's VQGAN codes of the photo crops (below)
  mnist       over experiments/vqvae.py:mnist's 7x7 codes (tfds `mnist`, prepared by you)
  cifar10     over experiments/vqgan.py:cifar10's 8x8 codes (tfds `cifar10`, prepared by you)
  runlocal    tiny VQ-VAE and GPT, 10 steps (`runlocal,stage1=DIR` after vqvae.py:runlocal)

MaskGIT (Chang et al. 2022), `maskgit`: the same transformer made bidirectional with a
[MASK] code, trained on the cross entropy of masked codes (cosine mask ratio;
`ssl_gen.objectives.masked_prior`), sampled by 8-step parallel decoding
(`ssl_gen.models.maskgit`), evaluated by the masked-code NLL at fixed ratios with a
position-unigram baseline (`ssl_gen.evals.masked_prior`; a masked model has no exact
likelihood) and the same final MMD² of 360 decoded samples:

  python -m ssl_gen.main --config=experiments/vq_prior.py:maskgit,stage1=runs/vqvae \
    --workdir=runs/vq_maskgit

Measured (maskgit, 800 steps, 14 wall-minutes on a 2-core CPU loaded by other jobs, from
the experiments/vqvae.py default run, seed 0; test split, nats per masked code, `final`
row; the baseline is the position unigram on the same masked codes):

  mask ratio            0.25   0.50   0.75   1.00
  MaskGIT               3.82   3.91   4.05   4.40
  position unigram      4.44   4.44   4.43   4.44     (uniform: log 256 = 5.55)
  MMD² of 360 samples (8 steps, choice temperature 4.5) 0.0055 (eval seeds 1, 2: 0.0067,
  0.0059), train-split floor 0.0013, uniform noise 0.363; the GPT's above: 0.0005.
  Still improving at 800 steps (training masked NLL 4.15 -> 4.13 over the last 100).

`photos`: stage 2 of the VQGAN on the embedded photo crops (experiments/vqgan.py): the
same GPT over each crop's 8x8 grid of K = 512 codes (64 tokens), 1,000 steps at batch 64
(6.4 epochs of 10,000 crops):

  python -m ssl_gen.main --config=experiments/vqgan.py --workdir=runs/vqgan
  python -m ssl_gen.main --config=experiments/vq_prior.py:photos,stage1=runs/vqgan \
    --workdir=runs/vq_prior_photos

Measured (from the experiments/vqgan.py default run, 6,000 steps; seed 0; ~17 wall-minutes
on a loaded 2-core CPU; test split, 2,000 crops x 64 codes, `final` row):

  prior (GPT)             212.20 nats/image   4.78 bits/code   (test NLL 237.4 at step
                                                                250, 221.0 at 500)
  position unigram        355.95              8.02
  unigram                 390.82              8.81
  uniform (64 log 512)    399.25              9.00
  MMD² of 500 decoded samples 0.127, train-split floor 0.125 (train and test crops come
  from disjoint regions of the photos), uniform noise 0.228.
  From the vqgan.py:no_gan run instead: 218.06 nats/image, 4.92 bits/code (position
  unigram 361.14), MMD² 0.132.

Override anything: `--config.num_train_steps=4000 --config.model.kwargs.prior.dropout=0.2`.

Measured (600 steps, ~7 wall-minutes on a loaded 2-core CPU, from the experiments/vqvae.py
default run, seed 0; test split, 360 digits, 16 codes each; `final` row):

  prior (GPT)             54.49 nats/image   4.91 bits/code   (last 100 training batches,
                                                               dropout on: 46.8)
  position unigram        71.02              6.40
  unigram                 86.99              7.84
  uniform (log 256)       88.72              8.00
  MMD² of 360 samples 0.0005, train-split floor 0.0013, uniform noise 0.355
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
    from experiments.vqgan import get_config as vqgan_config
    from experiments.vqvae import get_config as vqvae_config
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg
    from ssl_gen_experiments.vqgan import get_config as vqgan_config
    from ssl_gen_experiments.vqvae import get_config as vqvae_config


def get_config(arg=None):
    arg = parse_arg(arg, stage1="", maskgit=False, photos=False, mnist=False, cifar10=False,
                    runlocal=False)
    if arg.photos + arg.mnist + arg.cifar10 > 1:
        raise ValueError("vq_prior: choose one of photos, mnist, cifar10")
    stage1_arg = ",".join(a for a, on in (("mnist", arg.mnist), ("cifar10", arg.cifar10),
                                          ("runlocal", arg.runlocal)) if on) or None
    stage1 = (vqgan_config if arg.photos or arg.cifar10 else vqvae_config)(stage1_arg)
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(  # the stage-1 run's data, raw: the
        name=stage1.dataset.name, data_dir=placeholder(str),  # autoencoder maps its range
        train_split="train", eval_split="test", preprocess=()))
    c.batch_size = 64  # 64 digits x 16 codes = 1,024 next-code targets per step
    c.eval_batch_size = 120  # 360 test digits = 3 batches
    # ~27 epochs. Longer over-fits: in a 1,500-step run of this recipe (its first 434 steps
    # under a 3,000-step schedule) the test NLL was 55.3 nats per image at step 500, 60.6 at
    # 1,000 and 64.3 at 1,500, while the training NLL fell to 27.
    c.num_train_steps = 600

    c.model = ml_collections.ConfigDict(dict(name="vq_prior", input_key="image", kwargs=dict(
        stage1=stage1.model.kwargs.to_dict(),  # the stage-1 model, rebuilt to load its run
        stage1_model=stage1.model.name,  # "vqvae" or "vqgan"
        # 4 pre-LN blocks of width 128 (~0.8M parameters) for 1,437 training digits: dropout
        # and weight decay hold off over-fitting (the test NLL is the figure that counts).
        prior=dict(variant="digits", dropout=0.1, tie_embeddings=True))))
    if arg.stage1:  # the stage-1 run's whole tree, EMA codebook included, under vqvae/
        c.init_from = ml_collections.ConfigDict(dict(path=arg.stage1, mapping={"vqvae": ""}))
    c.objective = ml_collections.ConfigDict(dict(name="prior", kwargs=dict(input_key="image")))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, b1=0.9, b2=0.95, weight_decay=0.1,
        weight_decay_mask="no_bias_norm", schedule="warmup_cosine", warmup_steps=100,
        end_lr_factor=0.1, grad_clip_norm=1.0))  # GPT-style AdamW (nanoGPT's b2, wd, clip)
    c.evals = ml_collections.ConfigDict(dict(
        prior=dict(every_steps=200, kwargs=dict(field="image", num_samples=32)),
        two_sample=dict(every_steps=0, kwargs=dict(num=360, field="image", grid=False))))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 600
    c.keep_checkpoints = 1
    c.num_devices = placeholder(int)
    c.prefetch = 2
    c.progress_bar = True

    if arg.maskgit:
        # The same transformer, bidirectional, with the [MASK] code; decoding settings are
        # the model's: T = 8 steps (for the digits' 16 codes; MaskGIT's 8-12 for 256),
        # confidence noise 4.5 annealed to 0 (the reference's).
        c.model.kwargs.prior.bidirectional = True
        c.model.kwargs.update(num_steps=8, choice_temperature=4.5)
        c.objective.name = "masked_prior"
        # A random mask per example and step is fresh augmentation, and a step trains on
        # ~64 % of the codes (E[cos(pi/2 u)]): more steps than the GPT's 600.
        c.num_train_steps = c.checkpoint_every_steps = 800
        c.evals = ml_collections.ConfigDict(dict(
            masked_prior=dict(every_steps=200, kwargs=dict(
                field="image", ratios=(0.25, 0.5, 0.75, 1.0), num_samples=32)),
            two_sample=c.evals.two_sample.to_dict()))

    first = "masked_prior" if arg.maskgit else "prior"  # the likelihood eval of either kind
    if arg.mnist or arg.cifar10:
        # The tfds sets at scale: 49 (mnist) or 64 (cifar10) codes of K = 512 / 1024, 60k or
        # 50k training images; an 8-block GPT of width 256.
        c.model.kwargs.prior.update(width=256, depth=8, num_heads=8)
        c.batch_size = 128
        c.eval_batch_size = 500
        c.num_train_steps = c.checkpoint_every_steps = 20_000
        c.optimizer.update(learning_rate=6e-4, warmup_steps=1_000)
        c.evals[first].every_steps = 2_000
        c.evals.two_sample.kwargs.num = 1_000

    if arg.photos:
        # The VQGAN of experiments/vqgan.py on the photo crops: an 8x8 grid of K = 512 codes
        # per 32x32 crop, 10,000 training crops. The model's `vqvae/` holds the VQGAN's
        # autoencoder (the mapping {"vqvae": ""} as above; its discriminator is left behind).
        c.model.kwargs.prior.variant = "photos"  # (maskgit: the same, bidirectional)
        c.eval_batch_size = 200  # 2,000 test crops = 10 batches
        c.num_train_steps = c.checkpoint_every_steps = 1000  # 64 x 64 codes a step, 6.4 epochs
        c.evals[first].every_steps = 250
        c.evals.two_sample.kwargs.num = 500

    if arg.runlocal:
        c.batch_size = 32
        c.num_train_steps = 10
        c.model.kwargs.prior = dict(variant="tiny", dropout=0.0, tie_embeddings=True,
                                    bidirectional=bool(arg.maskgit))
        c.optimizer.warmup_steps = 2
        c.evals[first].update(every_steps=5)
        c.evals[first].kwargs.num_samples = 8
        c.evals.two_sample.kwargs.num = 32
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
        if arg.photos or arg.mnist or arg.cifar10:  # a slice of each split
            c.dataset.update(train_split="train[:512]", eval_split="test[:200]")
            c.eval_batch_size = 40
    return c
