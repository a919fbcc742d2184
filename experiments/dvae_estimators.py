r"""Discrete-latent VAEs trained with each gradient estimator: the estimator comparison.

Launch one estimator (the `:arg` picks a variant; add `,runlocal` for a seconds-long run):

  python -m ssl_gen.train.main --config=experiments/dvae_estimators.py:categorical \
      --workdir=runs/dvae_gs
  python -m ssl_gen.train.main \
      --config=experiments/dvae_estimators.py:bernoulli,estimator=disarm --workdir=runs/dvae_disarm

The comparison sweep (`sweep`: one training run per estimator and seed, then a report).
`make run` runs these two (6 min 41 s on a 2-core CPU): REINFORCE-LOO, Gumbel-Softmax and
straight-through trained 2,000 steps each with every categorical preset (14) measured at
their parameters every 500 steps (`track="every"`), then DisARM on Bernoulli latents with
ARM, DisARM and RLOO measured along it:

  python -m ssl_gen.main --config=experiments/dvae_estimators.py:categorical,sweep \
      --workdir=runs/dvae_comparison/categorical
  python -m ssl_gen.main --config=experiments/dvae_estimators.py:bernoulli,sweep \
      --config.estimators=disarm --config.track=rloo,arm,disarm \
      --config.num_train_steps=1000 --workdir=runs/dvae_comparison/bernoulli

writes DIR/<estimator>_s<seed>/ (each a trainer run) and DIR/report.md (a table per
estimator: final test ELBO and NLL, mean gradient log-variance, time and function
evaluations per step; plots of ELBO and log-variance against step, and of every estimator's
log-variance along each run's trajectory). `--config.seeds=0,1,2` repeats each estimator;
`--config.num_train_steps=...` sets the budget; `--config.track=own` measures only each
run's own estimator (cheaper for long estimator lists), `all` every estimator of the sweep
at each run's parameters (as REBAR's Fig. 2 does), `every` every preset of the latent
space (the embedded sweep's default), or a comma-separated list of presets.

Every run warms the KL weight up from 0 to 1 over the first 500 steps
(`objective.kwargs.kl_warmup_steps`, shared by the sweep's runs): without it the posterior
collapses onto the prior on these small images (KL 0.003 nats at step 200); in 2,000 steps
Gumbel-Softmax climbs out part way (test NLL 21.07 vs 19.74 with warm-up) and RLOO not at
all (25.54, no better than independent pixels at 25.22, vs 22.62). The tracker measures
the gradient of the ELBO itself, without the warm-up weight.

Variants:
  categorical       20 latents x 10 classes (Jang et al. 2017's latent space), the default
  bernoulli         200 Bernoulli units, linear encoder/decoder (REBAR/RELAX/DisARM "linear")
  nonlinear         200 Bernoulli units, two 200-unit tanh layers each side (REBAR "nonlinear")
  binarized_mnist   tfds `binarized_mnist` (28x28, fixed bits), papers' sizes, 100k steps
  mnist             tfds `mnist`, dynamic binarization (REBAR/DisARM), fixed-draw test bits
  estimator=rloo    any key of ESTIMATORS below (e.g. estimator=disarm, estimator=reinmax)
  sweep             the comparison (config.runner: run by ssl_gen.runners.dvae_comparison)
  runlocal          tiny model and few steps (combine: `bernoulli,estimator=arm,runlocal`)

Equal budgets: every preset in ESTIMATORS evaluates the decoder twice per example per step
(two samples, or one antithetic pair for ARM/DisARM; VIMCO's 2-sample bound), the fair
comparison; the metric `fevals` reports it, so an override of `num_samples` shows up. The
exceptions: `rebar` (4) and `relax` (7 per sample), `indecater` (N C + 1 per sample) and
`exact` (2^N or C^N, for tiny latents only: runlocal sizes).

Override anything: `--config.objective.kwargs.num_samples=4 --config.num_train_steps=500`.
"""

import copy

import ml_collections
from ml_collections.config_dict import placeholder

try:
    from experiments.common import parse_arg
except ImportError:  # installed, outside the repository: the configs ship as ssl_gen_experiments
    from ssl_gen_experiments.common import parse_arg

# Estimator presets: objective kwargs of `ssl_gen.objectives.discrete_elbo.loss_fn`.
ESTIMATORS = {
    # REINFORCE (Williams 1992) without a baseline: the variance floor of the comparison.
    "reinforce": dict(estimator=dict(name="score_function"), num_samples=2),
    # REINFORCE with a moving-average baseline (stateful: threaded through the train state).
    "reinforce_ma": dict(estimator=dict(name="score_function", baseline="moving_average",
                                        decay=0.99), num_samples=2),
    # REINFORCE leave-one-out (Kool et al. 2019): DisARM's main unbiased competitor.
    "rloo": dict(estimator=dict(name="score_function", baseline="loo"), num_samples=2),
    # Score function with the optimal-coefficient control variate per logit.
    "optimal_cv": dict(estimator=dict(name="score_function", baseline="optimal"),
                       num_samples=2),
    # VIMCO (Mnih & Rezende 2016): trains the 2-sample importance-weighted bound L_2 >= ELBO
    # with leave-one-out signals (its train `elbo` metric and tracked gradient are L_2's).
    "vimco": dict(estimator=dict(name="vimco"), num_samples=2),
    "arm": dict(estimator=dict(name="arm"), num_samples=1),  # Bernoulli only; 1 pair
    "disarm": dict(estimator=dict(name="disarm"), num_samples=1),  # Bernoulli only; 1 pair
    # Gumbel-Softmax with Jang et al.'s annealing from 1 to 0.5 (over half the run here).
    "gumbel_softmax": dict(estimator=dict(name="gumbel_softmax"), num_samples=2,
                           temperature_schedule=dict(start=1.0, end=0.5, anneal_steps=1_000)),
    "straight_through": dict(estimator=dict(name="straight_through"), num_samples=2),
    "straight_through_gumbel": dict(estimator=dict(name="straight_through_gumbel",
                                                   temperature=1.0), num_samples=2),
    "reinmax": dict(estimator=dict(name="reinmax", temperature=1.0), num_samples=2),
    # Gumbel-Rao (Paulus et al. 2021): ST-Gumbel's mean with its noise averaged given D.
    "gumbel_rao": dict(estimator=dict(name="gumbel_rao", temperature=1.0), num_samples=2),
    # Gapped straight-through (Fan et al. 2022).
    "gapped_straight_through": dict(estimator=dict(name="gapped_straight_through"),
                                    num_samples=2),
    # REBAR (Tucker et al. 2017) and RELAX (Grathwohl et al. 2018, stateful: a learned
    # control variate in the train state): 4 and 7 evaluations per sample as implemented.
    "rebar": dict(estimator=dict(name="rebar"), num_samples=1),
    "relax": dict(estimator=dict(name="relax"), num_samples=1),
    # IndeCateR (De Smet et al. 2023): K (N C + 1) evaluations, 201 per sample at 20 x 10.
    "indecater": dict(estimator=dict(name="indecater"), num_samples=1),
    "exact": dict(estimator=dict(name="exact"), num_samples=1),  # tiny latents only
}


DEFAULT_ESTIMATOR = "gumbel_softmax"
# Objective kwargs every estimator's run shares (the sweep merges each preset into these).
SHARED_OBJECTIVE = dict(kl_warmup_steps=500)


def get_config(arg=None):
    arg = parse_arg(arg, categorical=False, bernoulli=False, nonlinear=False,
                    binarized_mnist=False, mnist=False, estimator="", sweep=False,
                    runlocal=False)
    estimator = arg.estimator or DEFAULT_ESTIMATOR
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"config arg estimator={estimator!r} is not one of {sorted(ESTIMATORS)}")
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data: scikit-learn's 8x8 digits, binarized afresh every epoch (dynamic binarization,
    # as the REBAR/DisARM MNIST experiments do); the test split is thresholded once.
    c.dataset = ml_collections.ConfigDict(dict(
        name="digits_binarized", data_dir=placeholder(str), train_split="train",
        eval_split="test", dynamic_binarization=True, grey_max=placeholder(int),
        binarize_eval=placeholder(str)))
    c.batch_size = 64  # 1,437 training digits: ~22 steps per epoch
    c.eval_batch_size = 120  # 360 test digits = 3 batches; a multiple of 8 devices
    c.num_train_steps = 2_000  # not tuned yet: the comparison's sweep sets the budget

    # The papers' latent spaces with networks scaled to 64 pixels (their 512-256 / 200-200
    # hidden layers were sized for MNIST's 784).
    c.model = ml_collections.ConfigDict(dict(name="dvae", kwargs=dict(
        image_shape=(8, 8, 1), latent="categorical", num_latents=20, num_classes=10,
        hidden=(256, 128), activation="relu", likelihood="bernoulli")))
    # KL warm-up (discrete_elbo.kl_weight_at): trained on the ELBO from step 0, the posterior
    # collapses onto the prior on these 64-pixel images (see the module docstring: RLOO ends
    # at test NLL 25.54, no better than independent pixels); 500 steps of warm-up avoid it.
    c.objective = ml_collections.ConfigDict(dict(name="discrete_elbo", kwargs=dict(
        SHARED_OBJECTIVE, **copy.deepcopy(ESTIMATORS[estimator]))))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=100,
        end_lr_factor=0.1, grad_clip_norm=100.0))

    # During training a cheap k=100 bound; at the end the standard k=5000 test NLL.
    c.evals = ml_collections.ConfigDict(dict(
        iwae=dict(every_steps=500, kwargs=dict(num_samples=100, chunk_size=100),
                  final_kwargs=dict(num_samples=5000, chunk_size=500)),
        images=dict(every_steps=1_000, kwargs=dict()),
        pixel_baseline=dict(every_steps=0, kwargs=dict(num_levels=2)),
    ))
    c.log_every_steps = 50
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
    # None-valued settings are typed placeholders, so `--config.num_devices=1` overrides them.
    c.num_devices = placeholder(int)  # None: all visible devices
    c.prefetch = 2  # batches built ahead on a host thread (0: none)
    c.progress_bar = True

    if arg.bernoulli or arg.nonlinear:
        c.model.kwargs.update(latent="bernoulli", num_latents=200, hidden=())
    if arg.nonlinear:
        c.model.kwargs.update(hidden=(200, 200), activation="tanh")
    if arg.binarized_mnist:  # tfds: prepare it once with `tfds build binarized_mnist`
        c.dataset.update(name="binarized_mnist", dynamic_binarization=False)
    if arg.mnist:  # tfds `mnist` (0..255): bits resampled every epoch, as REBAR/DisARM do;
        # the test split (and the training batch the tracker measures on) binarized once,
        # by a fixed Bernoulli draw (ssl_gen.data.BinarizedSource).
        c.dataset.update(name="mnist", dynamic_binarization=True, grey_max=255,
                         binarize_eval="bernoulli")
    if arg.binarized_mnist or arg.mnist:
        c.eval_batch_size = 200  # 10,000 test images
        c.batch_size = 100
        c.model.kwargs.image_shape = (28, 28, 1)
        if c.model.kwargs.latent == "categorical":  # Jang et al. 2017: 512-256, ReLU
            c.model.kwargs.hidden = (512, 256)
        c.num_train_steps = 100_000
        c.objective.kwargs.kl_warmup_steps = 10_000
        if "temperature_schedule" in c.objective.kwargs:
            c.objective.kwargs.temperature_schedule.anneal_steps = 50_000
        c.evals.iwae.every_steps = 10_000
        c.evals.images.every_steps = 10_000
        c.checkpoint_every_steps = 5_000
    if arg.runlocal:  # seconds on a laptop: tiny latent (exact enumeration fits), few steps
        c.batch_size = 32
        c.num_train_steps = 20
        if c.model.kwargs.latent == "categorical":
            c.model.kwargs.update(num_latents=3, num_classes=4)  # 4^3 = 64 codes
        else:
            c.model.kwargs.num_latents = 6  # 2^6 = 64 codes
        c.model.kwargs.hidden = (32,) if c.model.kwargs.hidden else ()
        c.optimizer.warmup_steps = 5
        c.objective.kwargs.kl_warmup_steps = 10
        if "temperature_schedule" in c.objective.kwargs:
            c.objective.kwargs.temperature_schedule.anneal_steps = 10
        c.evals.iwae.update(every_steps=10, kwargs=dict(num_samples=8, chunk_size=8),
                            final_kwargs=dict(num_samples=16, chunk_size=8))
        c.evals.images.every_steps = 20
        c.log_every_steps = 5
        c.checkpoint_every_steps = 10
    if arg.sweep:
        _sweep(c, arg)
    return c


# The objective kwargs that make up an estimator preset (the rest is shared by a sweep's runs).
ESTIMATOR_KEYS = ("estimator", "num_samples", "temperature_schedule")
# The embedded sweep's training steps per run (Gumbel-Softmax anneals over half of them).
SWEEP_STEPS = 2_000

# The sweep's default subsets: the papers' headline comparisons, 2 f evals per step each.
SWEEP_DEFAULT = {"categorical": "rloo,gumbel_softmax,straight_through",
                 "bernoulli": "rloo,arm,disarm"}


def _sweep(c, arg):
    """The comparison: keys the runner (ssl_gen.runners.dvae_comparison) reads, and which it removes
    before each training run; the rest is the trainer config of every run, whose
    `objective.kwargs` are what every run shares (each run adds its preset's)."""
    latent = c.model.kwargs.latent
    c.runner = "dvae_comparison"
    c.estimators = SWEEP_DEFAULT[latent]  # comma-separated keys of `presets`
    c.seeds = "0"  # comma-separated
    # "all": every run's tracker measures every estimator of `estimators` at that run's
    # parameters (REBAR's Fig. 2: all estimators on one trajectory); "own": its own only.
    c.track = "all"  # or "own", "every" (every preset), or comma-separated presets
    # Every preset this latent space can run, with the variant's schedule lengths.
    anneal = c.objective.kwargs.get("temperature_schedule", {}).get("anneal_steps")
    c.objective.kwargs = {k: v for k, v in c.objective.kwargs.items()
                          if k not in ESTIMATOR_KEYS}
    presets = {}
    for name, kwargs in ESTIMATORS.items():
        if (name in ("arm", "disarm") and latent != "bernoulli") or (
                name == "exact" and not arg.runlocal):
            continue
        kwargs = copy.deepcopy(kwargs)
        if "temperature_schedule" in kwargs:
            kwargs["temperature_schedule"]["anneal_steps"] = anneal or 1_000
        presets[name] = kwargs
    c.presets = ml_collections.ConfigDict(presets, sort_keys=False)
    # The tracker (ssl_gen.evals.gradient_variance); the runner fills its `estimators`. It
    # measures the ELBO's gradient (no KL warm-up weight) between steps, so it does not
    # count in time per step.
    c.evals.gradient_variance = dict(every_steps=100, kwargs=dict(num_replicas=64,
                                                                  batch_size=64))
    c.evals.images.every_steps = 0  # final grids only
    if not (arg.runlocal or arg.binarized_mnist or arg.mnist):  # `make run`: ~5 min, 2 CPUs
        c.num_train_steps = SWEEP_STEPS
        c.evals.iwae.every_steps = 250
        c.log_every_steps = 50
        c.checkpoint_every_steps = SWEEP_STEPS // 2
        c.progress_bar = False
        # Every preset of the latent space (not only the trained ones) measured at each
        # trained run's parameters, 4 times along its trajectory: the main job's table of
        # every estimator's variance, bias against its floor, SNR and cost.
        c.track = "every"
        c.evals.gradient_variance.every_steps = SWEEP_STEPS // 4
        c.evals.gradient_variance.kwargs.num_replicas = 32  # 14 estimators: make run 6 min 41 s
    if arg.binarized_mnist or arg.mnist:  # 100 tracker evaluations along 100k steps
        c.evals.gradient_variance.every_steps = 1_000
    if arg.runlocal:  # ~20 s per estimator on 2 CPU cores, most of it compilation
        c.evals.gradient_variance.update(every_steps=10, kwargs=dict(num_replicas=8,
                                                                     batch_size=16))
        c.evals.iwae.every_steps = 0  # final only: one compilation less per run
        c.progress_bar = False
