r"""The ELBO of a VAE with discrete latents (`ssl_gen.models.dvae`), any discrete estimator.

    ELBO(x) = E_{q(z|x)}[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x),

with q(z|x) a product of N categoricals over C classes (or of N Bernoullis) and p(z)
uniform, so the KL is analytic: KL(q || U) = sum_n [log C - H(q_n)], the class entropy
H(q_n) = -sum_c q_nc log q_nc (C = 2 for Bernoulli units). The reconstruction term is
`est.expectation(log p(x|.), q, estimator, num_samples)`: its gradient with respect to the
encoder is the configured estimator's, with respect to the decoder the pathwise gradient
at the estimator's samples. The loss is the negative ELBO averaged over the batch's real
examples, in nats per example.

Estimators (config value `estimator`, resolved by `make_estimator`): every discrete one of
`ssl_gen.estimators` (`score_function` with each baseline, `arm`, `disarm`,
`gumbel_softmax`, `straight_through`, `straight_through_gumbel`, `gumbel_rao`,
`gapped_straight_through`, `reinmax`, `rebar`, `relax` (stateful), `indecater`, `exact`).
Relaxed ones (Gumbel-Softmax; Jang et al. 2017, Maddison et al. 2017) evaluate the decoder
at relaxed codes: their `recon`/`elbo` metrics are of the relaxed objective, which is what
they train; the evaluations (`ssl_gen.evals.iwae`) always score exact codes.

How the objective sees the training step and estimator state (the trainer's protocol, see
`ssl_gen.train.step`): the train step passes `step=` to an objective that declares it
(here it drives `temperature_schedule`) and `extra=` (the objective's own state): a stateful
estimator's state lives in `state["extra"]["estimator_state"]`, made by `init_extra` (from
`init_estimator_state`, None when stateless), and `loss_fn` returns the new one in
`aux["extra"]` (stored, not logged). Called directly, `loss_fn` takes `estimator_state=`
and returns `aux["estimator_state"]` instead.

Fair comparisons use equal budgets of decoder evaluations: `aux["fevals"]` is the number of
evaluations of f = log p(x|.) per example per step (backward passes not counted), each
estimator's own `cost` (`ssl_gen.estimators.core.Estimator`; `function_evaluations` in
`ssl_gen.objectives.estimator_config`): K for one-sample-per-evaluation estimators, 2K for
ARM/DisARM (K antithetic pairs), 4K for REBAR and 7K for RELAX (as implemented), K (N C + 1)
for IndeCateR, C^N (2^N) for exact enumeration. An estimator that states no cost is a
one-line error, so no comparison silently misreports it; a test checks every cost against
counted evaluations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ssl_gen import estimators as est
from ssl_gen.objectives.elbo import masked_mean
from ssl_gen.objectives.estimator_config import function_evaluations, make_estimator

DEFAULT_ESTIMATOR = "gumbel_softmax"

# Estimators that enumerate the joint support of the batch shape: run per example (the ELBO
# factorizes over examples), so their cost is C^N per example, not C^(B N) for the batch.
PER_EXAMPLE = frozenset({"exact"})
# Estimators of the K-sample (importance-weighted) bound, not of E_q[f]: config name ->
# `est.multi_sample_bound`'s estimator. They train L_K >= ELBO, K evaluations per example.
MULTI_SAMPLE = {"vimco": "vimco", "iwae_score_function": "score_function"}
SCHEDULE_KEYS = ("start", "end", "anneal_steps")


def base_name(estimator: est.Estimator) -> str:
    """The factory name of an estimator: 'score_function[loo]' -> 'score_function'."""
    return estimator.name.split("[", 1)[0]


def latent_distribution(latent: str, logits: jax.Array):
    """q(z|x) (or, at zero logits, the uniform prior) as an `ssl_gen.estimators` distribution.

    Args:
      latent: "categorical" (logits (B, N, C), one-hot samples) or "bernoulli" (B, N).
      logits: the encoder's output.
    """
    if latent == "categorical":
        return est.Categorical(logits)
    if latent == "bernoulli":
        return est.Bernoulli(logits)
    raise ValueError(f"discrete_elbo: latent must be 'categorical' or 'bernoulli', got {latent!r}")


def kl_to_uniform(q) -> jax.Array:
    """KL(q || uniform) per example, summed over the latent variables: (B,) from (B, N[, C])."""
    kl = q.kl(type(q)(jnp.zeros_like(q.logits)))  # (B, N): class axis summed for categorical
    return kl.reshape(kl.shape[0], -1).sum(-1)


def check_schedule(schedule: Mapping[str, Any]) -> tuple[float, float, int]:
    """(start, end, anneal_steps) of a temperature schedule, or a one-line ValueError."""
    keys = sorted(dict(schedule))
    if keys != sorted(SCHEDULE_KEYS):
        raise ValueError(
            f"discrete_elbo: temperature_schedule needs exactly the keys {SCHEDULE_KEYS}, "
            f"got {keys}")
    start, end, steps = schedule["start"], schedule["end"], schedule["anneal_steps"]
    if not (float(start) > 0 and float(end) > 0 and math.isfinite(start * end)):
        raise ValueError(
            f"discrete_elbo: temperature_schedule start and end must be > 0, got {start}, {end}")
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(
            f"discrete_elbo: temperature_schedule anneal_steps must be an int >= 1, got {steps!r}")
    return float(start), float(end), steps


def temperature_at(schedule: Mapping[str, Any], step) -> jax.Array:
    r"""tau(t) = start (end / start)^{min(t / anneal_steps, 1)}: geometric, then constant.

    Jang et al. (2017, Sec. 4.3) anneal tau = max(0.5, exp(-r t)) from 1; that is this
    schedule with start=1, end=0.5, anneal_steps = log(2) / r (here continuous in t rather
    than updated every 500 steps). `step=None` (a call outside the trainer) gives `start`.
    """
    start, end, steps = check_schedule(schedule)
    if step is None:
        return jnp.asarray(start, jnp.float32)
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
    return start * (end / start) ** frac


def resolve_estimator(spec: Any, temperature_schedule: Mapping[str, Any] | None = None,
                      step=None) -> tuple[est.Estimator, jax.Array | None]:
    """The estimator for this step and its temperature (None without a schedule).

    With a schedule, `spec` (a name or a dict without "temperature") is built at both ends
    of the schedule first, concretely, so an estimator that takes no temperature or refuses
    one of the ends (ReinMax below 1) is a one-line error before anything compiles.
    """
    if temperature_schedule is None:
        return make_estimator(spec, also_known=MULTI_SAMPLE), None
    if isinstance(spec, est.Estimator):
        raise ValueError("discrete_elbo: temperature_schedule needs the estimator as a name or "
                         "a dict, not an Estimator value")
    base = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "temperature" in base:
        raise ValueError("discrete_elbo: set either the estimator's temperature or "
                         "temperature_schedule, not both")
    start, end, _ = check_schedule(temperature_schedule)
    for t in (start, end):
        make_estimator({**base, "temperature": t}, also_known=MULTI_SAMPLE)
    tau = temperature_at(temperature_schedule, step)
    return make_estimator({**base, "temperature": tau}, also_known=MULTI_SAMPLE), tau


def kl_weight_at(beta: float, kl_warmup_steps: int, step=None):
    r"""The KL weight at `step`: beta min(1, t / kl_warmup_steps) (deterministic warm-up).

    KL warm-up (Bowman et al. 2016; Sonderby et al. 2016, "Ladder VAEs", Sec. 2.3) keeps
    the posterior from collapsing onto the prior before the decoder can use the code: on
    `digits_binarized` a categorical VAE trained on the ELBO from step 0 is at KL 0.003 nats
    by step 200; after 2,000 steps its test NLL is 25.54 with RLOO (no better than
    independent pixels) and 21.07 with Gumbel-Softmax, against 22.62 and 19.74 with 500
    steps of warm-up (`experiments/dvae_estimators.py`). `step=None` (a call outside the
    trainer) and `kl_warmup_steps=0` give beta: the ELBO itself.
    """
    if not (isinstance(kl_warmup_steps, int) and kl_warmup_steps >= 0):
        raise ValueError(f"discrete_elbo: kl_warmup_steps must be an int >= 0, got "
                         f"{kl_warmup_steps!r}")
    if not kl_warmup_steps or step is None:
        return beta
    return beta * jnp.clip(jnp.asarray(step, jnp.float32) / kl_warmup_steps, 0.0, 1.0)


def multi_sample_name(spec: Any) -> str | None:
    """The `MULTI_SAMPLE` key a config value names ("vimco" or {"name": "vimco"}), or None."""
    name = spec if isinstance(spec, str) else (
        spec.get("name") if hasattr(spec, "get") else None)
    return name if name in MULTI_SAMPLE else None


def init_estimator_state(*, model, estimator: Any = DEFAULT_ESTIMATOR,
                         temperature_schedule: Mapping[str, Any] | None = None, **unused):
    """The initial estimator state for the train state (None for a stateless estimator)."""
    del model, unused
    if multi_sample_name(estimator):
        return None
    e, _ = resolve_estimator(estimator, temperature_schedule, None)
    return e.init() if e.stateful else None


def init_extra(params, *, model, **kwargs) -> dict[str, Any]:
    """The train state's `extra`: `{"estimator_state": ...}` for a stateful estimator."""
    del params
    state = init_estimator_state(model=model, **kwargs)
    return {} if state is None else {"estimator_state": state}


def loss_fn(
    params: Any,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    model,
    estimator: Any = DEFAULT_ESTIMATOR,
    num_samples: int = 1,
    temperature_schedule: Mapping[str, Any] | None = None,
    beta: float = 1.0,
    kl_warmup_steps: int = 0,
    step: jax.Array | None = None,
    estimator_state: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """Negative ELBO of a discrete-latent VAE.

    Args:
      params: the model's variables (`{"params": ...}`).
      batch: `image` (B, H, W, C) integer levels; optional `example_mask` (B,).
      rng: key for the posterior samples.
      model: a `ssl_gen.models.dvae.Model`.
      estimator: the encoder-gradient estimator (a name, `{"name": ..., **kwargs}` or an
        `Estimator`; see `make_estimator`).
      num_samples: K, samples (ARM/DisARM: antithetic pairs) per example.
      temperature_schedule: `{"start", "end", "anneal_steps"}` for an estimator that takes a
        temperature (Gumbel-Softmax, ST-Gumbel, ReinMax); see `temperature_at`.
      beta: weight of the KL term (1 is the ELBO).
      kl_warmup_steps: KL warm-up: the KL weight rises linearly from 0 to `beta` over this
        many steps (`kl_weight_at`); 0 (the default) trains the ELBO from the start.
      step: the training step (the train step passes it); drives the temperature schedule
        and the KL warm-up.
      estimator_state: a stateful estimator's state (for a direct call).
      extra: the train state's `extra` (the train step passes it): its `estimator_state`
        is used, and the new one returned as `aux["extra"]`.

    Returns:
      (loss, aux): loss = -mean(recon - beta_t KL); aux = {elbo, recon, kl, fevals[,
      temperature][, kl_weight][, estimator_state]}, the metrics averaged over real examples
      (`elbo` is the ELBO, beta = 1, whatever the loss weighs the KL by; for the
      multi-sample estimators of `MULTI_SAMPLE` it is the K-sample bound they train).
    """
    kl_weight = kl_weight_at(beta, kl_warmup_steps, step)
    if extra is not None:
        if estimator_state is not None:
            raise ValueError("discrete_elbo: pass estimator_state or extra, not both")
        estimator_state = extra.get("estimator_state")
    if multi_sample_name(estimator):
        if estimator_state is not None:
            raise ValueError(f"discrete_elbo: estimator {estimator!r} is stateless: "
                             "estimator_state must be None")
        return _multi_sample_loss(params, batch, rng, model=model, estimator=estimator,
                                  num_samples=num_samples, schedule=temperature_schedule,
                                  kl_weight=kl_weight, kl_warmup_steps=kl_warmup_steps)
    x = batch["image"]
    mask = batch.get("example_mask")
    e, tau = resolve_estimator(estimator, temperature_schedule, step)
    if e.stateful and estimator_state is None:
        raise ValueError(
            f"discrete_elbo: estimator {e.name!r} is stateful: pass estimator_state "
            "(from init_estimator_state) and thread aux['estimator_state'] to the next call")
    if not e.stateful and estimator_state is not None:
        raise ValueError(f"discrete_elbo: estimator {e.name!r} is stateless: "
                         "estimator_state must be None")
    dist_fn = functools.partial(latent_distribution, model.latent_type)
    logits = model.apply(params, x, method=model.encode)  # (B, N, C) or (B, N)

    def log_likelihood(z):  # (B, *latent) -> (B,); the decoder's gradient is pathwise
        return model.apply(params, z, x, method=model.log_likelihood)

    new_state = None
    if base_name(e) in PER_EXAMPLE:
        def one_example(lg, xi, key):  # lg (*latent), xi (H, W, C)
            f = lambda z: model.apply(params, z[None], xi[None], method=model.log_likelihood)[0]
            return est.expectation(f, dist_fn, e, num_samples)(lg, key)

        keys = jax.random.split(rng, x.shape[0])
        recon = jax.vmap(one_example)(logits, x, keys)  # (B,)
    elif e.stateful:
        objective = est.expectation(log_likelihood, dist_fn, e, num_samples)
        recon, new_state = objective(logits, rng, estimator_state)
    else:
        recon = est.expectation(log_likelihood, dist_fn, e, num_samples)(logits, rng)
    kl = kl_to_uniform(dist_fn(logits))  # (B,)
    fevals = function_evaluations(e, model.latent_shape, num_samples)
    aux = {
        "elbo": masked_mean(recon - kl, mask),
        "recon": masked_mean(recon, mask),
        "kl": masked_mean(kl, mask),
        "fevals": jnp.asarray(fevals, jnp.float32),
    }
    if tau is not None:
        aux["temperature"] = jnp.asarray(tau, jnp.float32)
    if kl_warmup_steps:
        aux["kl_weight"] = jnp.asarray(kl_weight, jnp.float32)
    if new_state is not None and extra is not None:
        aux["extra"] = {**extra, "estimator_state": new_state}
    elif new_state is not None:
        aux["estimator_state"] = new_state
    return -masked_mean(recon - kl_weight * kl, mask), aux


def _multi_sample_loss(params, batch, rng, *, model, estimator, num_samples, schedule,
                       kl_weight, kl_warmup_steps):
    r"""-L_K, the K-sample bound with the VIMCO (or plain score-function) gradient.

    L_K = E[log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)] (`est.multi_sample_bound`). With a
    KL weight w != 1 (warm-up) the loss is -(L_K + (1 - w) KL(q || p)): at K = 1 its
    expectation is -(recon - w KL), the warm-up objective of the single-sample estimators.
    aux `elbo` is L^ (the trained bound, >= the ELBO in expectation), `kl` the analytic KL.
    """
    name = multi_sample_name(estimator)
    if schedule is not None:
        raise ValueError(f"discrete_elbo: estimator {name!r} takes no temperature_schedule")
    extra = sorted(k for k in (estimator if hasattr(estimator, "get") else {}) if k != "name")
    if extra:
        raise ValueError(f"discrete_elbo: estimator {name!r} takes no arguments, got {extra}")
    x, mask = batch["image"], batch.get("example_mask")
    dist_fn = functools.partial(latent_distribution, model.latent_type)
    logits = model.apply(params, x, method=model.encode)
    prior = dist_fn(jnp.zeros_like(logits))

    def log_joint(z):  # (B, *latent) -> (B,): log p(x|z) + log p(z)
        log_prior = prior.log_prob(z)
        log_prior = log_prior.reshape(log_prior.shape[0], -1).sum(-1)
        return model.apply(params, z, x, method=model.log_likelihood) + log_prior

    bound = est.multi_sample_bound(log_joint, dist_fn, num_samples,
                                   estimator=MULTI_SAMPLE[name])(logits, rng)  # (B,)
    kl = kl_to_uniform(dist_fn(logits))
    aux = {"elbo": masked_mean(bound, mask), "kl": masked_mean(kl, mask),
           "fevals": jnp.asarray(num_samples, jnp.float32)}
    if kl_warmup_steps:
        aux["kl_weight"] = jnp.asarray(kl_weight, jnp.float32)
    return -masked_mean(bound + (1.0 - kl_weight) * kl, mask), aux
