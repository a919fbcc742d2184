"""The discrete ELBO against exact enumeration; every estimator trains; step/state protocol."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_gen import estimators as est
from ssl_gen.models import dvae
from ssl_gen.objectives import discrete_elbo as de
from ssl_gen.objectives import make_estimator
from ssl_gen.train import checkpoint, sharding
from ssl_gen.train.objective import SINGLE, Objective, Part
from ssl_gen.train.step import TrainStep, init_state

X = np.random.default_rng(0).integers(0, 2, size=(4, 8, 8, 1)).astype(np.uint8)
MODELS = {  # tiny latent spaces: 2^3 = 8 and 3^2 = 9 joint codes
    "bernoulli": dvae.Model(latent="bernoulli", num_latents=3, hidden=(8,)),
    "categorical": dvae.Model(latent="categorical", num_latents=2, num_classes=3, hidden=(8,)),
}


def _params(latent, seed=0):
    return MODELS[latent].init({"params": jax.random.key(seed)}, X)


def _codes(latent):
    """Every joint code, built with itertools (independently of `support()`): (M, *latent)."""
    if latent == "bernoulli":
        return np.array(list(itertools.product([0.0, 1.0], repeat=3)), np.float32)  # (8, 3)
    eye = np.eye(3, dtype=np.float32)
    return np.array([[eye[a], eye[b]] for a, b in itertools.product(range(3), repeat=2)])


def _exact_elbo(params, latent):
    """mean_b sum_z q(z|x_b) [log p(x_b|z) + log p(z) - log q(z|x_b)], by enumeration."""
    m, codes = MODELS[latent], jnp.asarray(_codes(latent))
    logits = m.apply(params, X, method=m.encode)  # (B, *latent)
    if latent == "bernoulli":  # log q(z|x) (B, M): sum_n z log s(l) + (1 - z) log s(-l)
        log_q = (codes[None] * jax.nn.log_sigmoid(logits[:, None])
                 + (1 - codes[None]) * jax.nn.log_sigmoid(-logits[:, None])).sum(-1)
        log_prior = 3 * np.log(0.5)
    else:  # sum_n sum_c z_nc log softmax(l_n)_c
        log_q = (codes[None] * jax.nn.log_softmax(logits, -1)[:, None]).sum((-1, -2))
        log_prior = 2 * np.log(1 / 3)
    ll = jax.vmap(lambda xb: m.apply(params, codes, jnp.broadcast_to(xb, (len(codes),) + xb.shape),
                                     method=m.log_likelihood))(X)  # (B, M)
    return jnp.mean(jnp.sum(jnp.exp(log_q) * (ll + log_prior - log_q), axis=1))


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_kl_to_uniform_matches_enumeration(latent):
    logits = jax.random.normal(jax.random.key(1), (2,) + MODELS[latent].latent_shape) * 2
    q = de.latent_distribution(latent, logits)
    codes = jnp.asarray(_codes(latent))  # (M, *latent)
    log_q = jax.vmap(lambda z: q.log_prob(z[None]).reshape(2, -1).sum(-1))(codes)  # (M, B)
    num_codes = len(codes)
    want = jnp.sum(jnp.exp(log_q) * (log_q + np.log(num_codes)), axis=0)  # log U = -log M
    np.testing.assert_allclose(jax.jit(de.kl_to_uniform)(q), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_exact_estimator_is_the_gradient_of_the_enumerated_elbo(latent):
    m, params = MODELS[latent], _params(latent)
    loss = lambda p: de.loss_fn(p, {"image": X}, jax.random.key(2), model=m, estimator="exact")
    (value, aux), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    want_value, want_grads = jax.jit(jax.value_and_grad(_exact_elbo), static_argnums=1)(
        params, latent)
    np.testing.assert_allclose(-value, want_value, rtol=1e-5)
    assert float(aux["fevals"]) == len(_codes(latent))  # per example: every joint code
    for g, w in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(-g, w, rtol=1e-4, atol=1e-6)
    enc = grads["params"]["encoder"]
    assert float(optax.tree.norm(enc)) > 0  # the encoder's gradient is not trivially zero


# Every discrete estimator of the library, tiny: (spec, num_samples, latents it supports).
SPECS = {
    "score_function": (dict(name="score_function"), 1, ("bernoulli",)),
    "score_function[loo]": (dict(name="score_function", baseline="loo"), 2, ("categorical",)),
    "score_function[optimal]": (dict(name="score_function", baseline="optimal"), 2,
                                ("categorical",)),
    "score_function[moving_average]": (dict(name="score_function", baseline="moving_average"),
                                       1, ("bernoulli",)),
    "arm": (dict(name="arm"), 1, ("bernoulli",)),
    "disarm": (dict(name="disarm"), 1, ("bernoulli",)),
    "gumbel_softmax": (dict(name="gumbel_softmax", temperature=0.5), 1, ("categorical",)),
    "straight_through": (dict(name="straight_through"), 1, ("bernoulli",)),
    "straight_through_gumbel": (dict(name="straight_through_gumbel"), 1, ("categorical",)),
    "reinmax": (dict(name="reinmax"), 1, ("categorical",)),
    "gumbel_rao": (dict(name="gumbel_rao", num_rao_samples=2), 1, ("categorical",)),
    "gapped_straight_through": (dict(name="gapped_straight_through"), 1, ("categorical",)),
    "rebar": (dict(name="rebar"), 1, ("bernoulli",)),
    "relax": (dict(name="relax", hidden=4), 1, ("categorical",)),  # stateful
    "indecater": (dict(name="indecater"), 1, ("categorical",)),
    "exact": (dict(name="exact"), 1, ("bernoulli",)),
}
# Only those the library has today (several are landing in parallel); the coverage test
# below fails when the library has one that is not here.
SPECS = {k: v for k, v in SPECS.items() if v[0]["name"] in est.__all__}
CONTINUOUS_ONLY = {"pathwise", "measure_valued"}


def test_every_discrete_estimator_of_the_library_is_covered():
    factories = set()
    for name in est.__all__:
        try:
            factories.add(make_estimator(name).name.split("[", 1)[0])
        except (ValueError, TypeError):
            continue  # not an estimator factory callable with its defaults
    missing = factories - CONTINUOUS_ONLY - {s.split("[", 1)[0] for s in SPECS}
    assert not missing, f"add {sorted(missing)} to SPECS here (and its cost to discrete_elbo)"


@pytest.mark.parametrize("name, latent", [(n, lat) for n, s in SPECS.items() for lat in s[2]])
def test_each_estimator_trains_a_few_steps(name, latent):
    spec, k, _ = SPECS[name]
    m, params = MODELS[latent], _params(latent)
    e = make_estimator(spec)
    tx = optax.sgd(1e-2)  # cheaper to compile than adam; the update is not what is tested
    state = e.init() if e.stateful else None

    @jax.jit
    def step(params, opt_state, est_state, key):
        loss = lambda p: de.loss_fn(p, {"image": X}, key, model=m, estimator=spec,
                                    num_samples=k, estimator_state=est_state)
        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, aux, grads

    opt_state, p = tx.init(params), params
    for i in range(2):
        p, opt_state, aux, grads = step(p, opt_state, state, jax.random.key(i))
        state = aux.pop("estimator_state", None)
        assert np.isfinite(float(aux["elbo"])), (name, i)
    assert float(optax.tree.norm(grads["params"]["encoder"])) > 0, "no encoder gradient"
    assert float(aux["fevals"]) == de.function_evaluations(e, m.latent_shape, k)
    if isinstance(state, est.MovingAverageState):
        assert int(state.count) == 2  # the moving average saw every step
    if e.stateful:
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state))
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), p, params)
    assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize("name", sorted(SPECS))
def test_function_evaluation_table_matches_counted_evaluations(name):
    """Each estimator's stated cost against est.variance.count_evaluations (a host callback per
    evaluated sample), for one example's latent and K = 2 (1 for exact, which ignores K)."""
    spec, _, latents = SPECS[name]
    e = make_estimator(spec)
    k = max(2, e.min_samples) if name != "exact" else 1
    shape = MODELS[latents[0]].latent_shape
    logits = jnp.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)
    dist_fn = functools.partial(de.latent_distribution, latents[0])
    counted = est.variance.count_evaluations(lambda z: jnp.sum(jnp.sin(z)), dist_fn, e,
                                             logits, k, state=e.init() if e.stateful else None)
    assert de.function_evaluations(e, shape, k) == counted


def test_function_evaluation_counts_and_unknown_estimator():
    count = lambda spec, shape, k: de.function_evaluations(make_estimator(spec), shape, k)
    assert count({"name": "score_function", "baseline": "loo"}, (3,), 4) == 4
    assert count("disarm", (3,), 4) == 8  # 4 antithetic pairs
    assert count("exact", (5,), 1) == 32 and count("exact", (2, 10), 1) == 100
    assert count("indecater", (20, 10), 2) == 2 * 201  # K (N C + 1)
    mystery = est.Estimator(name="mystery", estimate=lambda f, d, k, n: f(d.sample(k)))
    with pytest.raises(ValueError, match="no function-evaluation count for estimator 'mystery'"):
        de.function_evaluations(mystery, (3,), 1)


def test_temperature_schedule_and_its_errors():
    sched = dict(start=1.0, end=0.25, anneal_steps=100)
    taus = [float(de.temperature_at(sched, s)) for s in (0, 50, 100, 1000)]
    np.testing.assert_allclose(taus, [1.0, 0.5, 0.25, 0.25], rtol=1e-6)
    assert float(de.temperature_at(sched, None)) == 1.0
    e, tau = de.resolve_estimator("gumbel_softmax", sched, jnp.int32(50))
    assert e.name.startswith("gumbel_softmax") and float(tau) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="bad arguments"):  # disarm has no temperature
        de.resolve_estimator("disarm", sched)
    with pytest.raises(ValueError, match="reinmax: temperature must be >= 1"):
        de.resolve_estimator("reinmax", sched)  # the schedule's end is checked concretely
    with pytest.raises(ValueError, match="not both"):
        de.resolve_estimator({"name": "gumbel_softmax", "temperature": 1.0}, sched)
    with pytest.raises(ValueError, match="exactly the keys"):
        de.resolve_estimator("gumbel_softmax", dict(start=1.0, end=0.5))
    with pytest.raises(ValueError, match="must be > 0"):
        de.resolve_estimator("gumbel_softmax", dict(start=1.0, end=0.0, anneal_steps=10))


def test_kl_warmup_weighs_the_kl_and_reports_the_elbo():
    """With exact enumeration the loss is -(recon - w_t KL) exactly, w_t = min(1, t / T);
    `elbo` stays the ELBO (weight 1) and equals the enumerated one at every step."""
    m, params = MODELS["categorical"], _params("categorical")
    truth = float(_exact_elbo(params, "categorical"))
    warm = jax.jit(lambda t: de.loss_fn(params, {"image": X}, jax.random.key(0), model=m,
                                        estimator="exact", kl_warmup_steps=10, step=t))
    for step, weight in ((0, 0.0), (5, 0.5), (10, 1.0), (50, 1.0)):
        loss, aux = warm(jnp.int32(step))
        assert float(aux["kl_weight"]) == pytest.approx(weight)
        np.testing.assert_allclose(float(aux["elbo"]), truth, rtol=1e-5)
        np.testing.assert_allclose(float(loss), -(float(aux["recon"]) - weight * float(aux["kl"])),
                                   rtol=1e-5)
    assert float(aux["kl"]) > 0.01  # the check above can tell weights apart
    # Outside the trainer (no step) the loss is the ELBO; a bad length is one line.
    loss, aux = de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, estimator="exact",
                           kl_warmup_steps=10)
    assert "kl_weight" not in aux or float(aux["kl_weight"]) == 1.0
    np.testing.assert_allclose(float(loss), -truth, rtol=1e-5)
    with pytest.raises(ValueError, match="kl_warmup_steps must be an int >= 0"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, kl_warmup_steps=-1)


def test_stateful_estimator_needs_its_state():
    m, params = MODELS["bernoulli"], _params("bernoulli")
    ma = {"name": "score_function", "baseline": "moving_average"}
    with pytest.raises(ValueError, match="is stateful: pass estimator_state"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, estimator=ma)
    with pytest.raises(ValueError, match="is stateless"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, estimator="disarm",
                   estimator_state=est.MovingAverageState(jnp.zeros(()), jnp.zeros((), int)))
    assert de.init_estimator_state(model=m, estimator="disarm") is None
    assert int(de.init_estimator_state(model=m, estimator=ma).count) == 0


def _train_step(loss_fn, tx, init_extra=None):
    """The trainer's jitted step on a one-device mesh, and the initial state, as the trainer
    builds them from the objective (`ssl_gen.train.objective`)."""
    mesh = sharding.make_mesh(1)
    repl = sharding.replicated(mesh)
    obj = Objective((Part(SINGLE, loss_fn),), init_extra, None)
    step = TrainStep(obj, {SINGLE: tx}, state_sharding=repl,
                     batch_sharding=sharding.batch_sharded(mesh), replicated=repl)
    state = jax.device_put(init_state(_params("categorical"), obj, {SINGLE: tx}), repl)
    return step, state


def test_train_step_passes_the_step_and_threads_the_estimator_state(tmp_path):
    """The trainer's protocol (ssl_gen.train.step): `step=` drives the temperature; the
    estimator state lives in state["extra"]["estimator_state"], is not logged, and
    checkpoints."""
    m, tx = MODELS["categorical"], optax.adam(1e-3)
    sched = dict(start=1.0, end=0.5, anneal_steps=2)
    # Bound as the trainer binds it: the partial still declares `step` and `extra`.
    loss = functools.partial(de.loss_fn, model=m, estimator="gumbel_softmax",
                             temperature_schedule=sched)
    train_step, state = _train_step(loss, tx)
    taus = []
    for _ in range(3):
        state, metrics = train_step(state, {"image": X}, jax.random.key(0))
        taus.append(float(metrics["temperature"]))
    np.testing.assert_allclose(taus, [1.0, 0.5**0.5, 0.5], rtol=1e-6)
    assert state["extra"] == {}

    ma = {"name": "score_function", "baseline": "moving_average", "decay": 0.5}
    loss_ma = functools.partial(de.loss_fn, model=m, estimator=ma)
    train_step, state = _train_step(
        loss_ma, tx, functools.partial(de.init_extra, model=m, estimator=ma))
    for _ in range(2):
        state, metrics = train_step(state, {"image": X}, jax.random.key(0))
    assert not any("estimator_state" in k or "extra" in k for k in metrics)
    assert train_step.num_traces == 1
    assert int(state["extra"]["estimator_state"].count) == 2
    # The NamedTuple state survives a checkpoint (a failed restore would silently restart).
    ckpt = checkpoint.Checkpointer(str(tmp_path), save_every_steps=1, async_save=False)
    ckpt.save(2, state, {"epoch": 0})
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                           sharding=a.sharding), state)
    step, restored, _ = ckpt.restore_latest(abstract)
    ckpt.close()
    est_state = restored["extra"]["estimator_state"]
    assert step == 2 and isinstance(est_state, est.MovingAverageState)
    np.testing.assert_array_equal(est_state.mean, state["extra"]["estimator_state"].mean)


def _exact_iwae2(params, latent):
    """mean_b E_{z1, z2 ~ q}[log (w1 + w2) / 2], by enumerating all pairs of joint codes."""
    m, codes = MODELS[latent], jnp.asarray(_codes(latent))
    logits = m.apply(params, X, method=m.encode)
    q = de.latent_distribution(latent, logits[:, None])  # batch (B, 1, ...) over codes
    log_q = q.log_prob(codes[None]).reshape(len(X), len(codes), -1).sum(-1)  # (B, M)
    log_prior = -np.log(len(codes))
    ll = jax.vmap(lambda xb: m.apply(params, codes, jnp.broadcast_to(xb, (len(codes),) + xb.shape),
                                     method=m.log_likelihood))(X)  # (B, M)
    log_w = ll + log_prior - log_q
    pair_w = jnp.logaddexp(log_w[:, :, None], log_w[:, None, :]) - np.log(2)  # (B, M, M)
    pair_q = log_q[:, :, None] + log_q[:, None, :]
    return jnp.mean(jnp.sum(jnp.exp(pair_q) * pair_w, axis=(1, 2)))


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_vimco_trains_the_two_sample_bound_without_bias(latent):
    """VIMCO through the objective: the mean loss and encoder gradient over independent keys
    match -E[L_2] and its gradient by enumerating every pair of codes (within 4 standard
    errors of the replicas, tests/estimators/tolerance.py); L_2 >= the exact ELBO."""
    from tests.estimators.tolerance import assert_mean_close

    m, params = MODELS[latent], _params(latent)
    enc = lambda p: p["params"]["encoder"]
    with_enc = lambda p, e: {"params": {**p["params"], "encoder": e}}
    truth_value, truth_grad = jax.value_and_grad(
        lambda e: _exact_iwae2(with_enc(params, e), latent))(enc(params))
    assert float(truth_value) > float(_exact_elbo(params, latent)) + 1e-3  # tighter bound

    def one(key):
        loss = lambda e: de.loss_fn(with_enc(params, e), {"image": X}, key, model=m,
                                    estimator="vimco", num_samples=2)[0]
        return jax.value_and_grad(loss)(enc(params))

    values, grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), 20_000))
    assert_mean_close(-values, truth_value, what="L_2")
    flat = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(grads)], 1)
    flat_truth = jnp.concatenate([g.reshape(-1) for g in jax.tree.leaves(truth_grad)])
    assert_mean_close(-flat, flat_truth, what="encoder gradient of L_2")


@pytest.mark.parametrize("latent", ["bernoulli", "categorical"])
def test_vimco_trains_a_few_steps(latent):
    """Two jitted SGD steps on -L_2: finite bound, a non-zero encoder gradient, moved params."""
    m, params = MODELS[latent], _params(latent)
    tx = optax.sgd(1e-2)

    @jax.jit
    def step(p, opt_state, key):
        loss = lambda q: de.loss_fn(q, {"image": X}, key, model=m, estimator="vimco",
                                    num_samples=2)
        (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(p)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(p, updates), opt_state, aux, grads

    p, opt_state = params, tx.init(params)
    for i in range(2):
        p, opt_state, aux, grads = step(p, opt_state, jax.random.key(i))
        assert np.isfinite(float(aux["elbo"])) and float(aux["fevals"]) == 2
    assert float(optax.tree.norm(grads["params"]["encoder"])) > 0
    assert float(optax.tree.norm(jax.tree.map(lambda a, b: a - b, p, params))) > 0


def test_vimco_trains_and_its_errors():
    m, params = MODELS["categorical"], _params("categorical")
    loss, aux = de.loss_fn(params, {"image": X}, jax.random.key(0), model=m,
                           estimator={"name": "vimco"}, num_samples=3, kl_warmup_steps=10,
                           step=jnp.int32(5))
    assert float(aux["fevals"]) == 3 and float(aux["kl_weight"]) == 0.5
    # warm-up adds back (1 - w) KL: at w = 1/2, loss = -(L^ + KL / 2)
    np.testing.assert_allclose(float(loss), -(float(aux["elbo"]) + 0.5 * float(aux["kl"])),
                               rtol=1e-5)
    assert de.init_estimator_state(model=m, estimator="vimco") is None
    with pytest.raises(ValueError, match="num_samples >= 2"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, estimator="vimco")
    with pytest.raises(ValueError, match="takes no temperature_schedule"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m, estimator="vimco",
                   num_samples=2, temperature_schedule=dict(start=1.0, end=0.5, anneal_steps=5))
    with pytest.raises(ValueError, match="takes no arguments"):
        de.loss_fn(params, {"image": X}, jax.random.key(0), model=m,
                   estimator={"name": "vimco", "temperature": 1.0}, num_samples=2)
