r"""Gaussian VAE on small images, test NLL by importance sampling (IWAE bound, k=5000).

Launch (the `:arg` picks a variant; add `,runlocal` for a seconds-long smoke run):

  python -m ssl_gen.train.main --config=experiments/vae.py:digits --workdir=runs/vae

Variants:
  digits            17 grey levels per pixel, categorical likelihood (the default)
  digits_binarized  dynamically binarized digits, Bernoulli likelihood
  binarized_mnist   tfds `binarized_mnist` (28x28), for users who have it prepared
  runlocal          tiny model and few steps (combine: `digits,runlocal`)

Override anything: `--config.num_train_steps=2000 --config.model.kwargs.latent_dim=8`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, digits=False, digits_binarized=False, binarized_mnist=False,
                    runlocal=False)
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: `digits` (scikit-learn's 1,797 8x8 digits, 17 grey levels) ships with the package.
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits", data_dir=placeholder(str), train_split="train", eval_split="test",
        preprocess=()))  # named ops (ssl_gen.data.preprocess); none: the levels as stored
    c.batch_size = 128
    c.eval_batch_size = 120  # 360 test digits = 3 batches; a multiple of 8 devices
    # 1,437 training digits overfit fast: ~100 epochs with strong weight decay is the sweet
    # spot (the sweep behind this is in the README; 3,000 steps end 9 nats worse).
    c.num_train_steps = 1_200

    c.model = ml_collections.ConfigDict(dict(name="vae", kwargs=dict(
        image_shape=(8, 8, 1), likelihood="categorical", num_levels=17, arch="mlp",
        hidden=(256, 256), latent_dim=16)))
    c.objective = ml_collections.ConfigDict(dict(name="elbo", kwargs=dict(
        estimator="pathwise", num_samples=1)))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
        end_lr_factor=0.01, weight_decay=0.3, grad_clip_norm=100.0))

    # During training a cheap k=100 bound; at the end the standard k=5000 test NLL.
    c.evals = ml_collections.ConfigDict(dict(
        iwae=dict(every_steps=400, kwargs=dict(num_samples=100, chunk_size=100),
                  final_kwargs=dict(num_samples=5000, chunk_size=500)),
        images=dict(every_steps=400, kwargs=dict()),
        pixel_baseline=dict(every_steps=0, kwargs=dict(num_levels=17)),
    ))
    c.log_every_steps = 100
    c.checkpoint_every_steps = 400
    c.keep_checkpoints = 3
    # None-valued settings are typed placeholders, so `--config.num_devices=1` overrides them.
    c.num_devices = placeholder(int)  # None: all visible devices
    c.prefetch = 2  # batches built ahead on a host thread (0: none)
    c.progress_bar = True

    if arg.digits_binarized:
        c.dataset.name = "digits_binarized"
        # Bits resampled every epoch from the `grey` levels; evals read the stored threshold.
        c.dataset.preprocess = ({"name": "binarize", "mode": "dynamic"},)
        c.model.kwargs.likelihood = "bernoulli"
        c.evals.pixel_baseline.kwargs.num_levels = 2
    if arg.binarized_mnist:  # tfds: prepare it once with `tfds build binarized_mnist`
        c.dataset.name = "binarized_mnist"
        c.dataset.eval_split = "test"
        c.eval_batch_size = 200  # 10,000 test images
        c.model.kwargs.update(image_shape=(28, 28, 1), likelihood="bernoulli",
                              hidden=(500, 500), latent_dim=50)
        c.num_train_steps = 200_000
        c.optimizer.weight_decay = 1e-4  # 60,000 images: the decay digits needs is not
        c.evals.iwae.every_steps = 20_000
        c.evals.pixel_baseline.kwargs.num_levels = 2
    if arg.runlocal:  # seconds on a laptop: tiny model, few steps, small bounds
        c.batch_size = 32
        c.eval_batch_size = 120
        c.num_train_steps = 20
        c.model.kwargs.update(hidden=(32,), latent_dim=4)
        c.optimizer.warmup_steps = 5
        c.evals.iwae.update(every_steps=10, kwargs=dict(num_samples=8, chunk_size=8),
                            final_kwargs=dict(num_samples=16, chunk_size=8))
        c.evals.images.every_steps = 20
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    return c
