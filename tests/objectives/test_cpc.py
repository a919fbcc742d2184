"""The CPC objective: each step's InfoNCE loss equals a NumPy loop over anchors and their
candidates for every negatives mode; the logged MI bound is log N - L_k (and
mi_bounds.infonce of the block); a bad `negatives` is a one-line ValueError; it jits once;
and CPC learns a planted structure far above chance (slow)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ssl_gen.models import cpc as cpc_model
from ssl_gen.objectives import cpc, mi_bounds

MODEL = cpc_model.Model(variant="tiny")  # K = 2, stride 2
X = jax.random.normal(jax.random.key(0), (3, 10))  # (B, T): 5 frames


@pytest.fixture(scope="module")
def params():
    return jax.jit(MODEL.init)(jax.random.key(1), X)


def reference_losses(preds, z, negatives):
    """L_k, accuracy_k and N_k by explicit loops: anchor (b, t) with t + k < T' scores each
    candidate latent z_c by z_c . preds[k-1, b, t]; the positive is z_{b, t+k}."""
    preds, z = np.asarray(preds, np.float64), np.asarray(z, np.float64)
    num_steps, b, t_frames, _ = preds.shape
    out = {}
    for k in range(1, num_steps + 1):
        valid = t_frames - k
        losses, hits = [], []
        for i in range(b):
            for t in range(valid):
                if negatives == "batch":
                    cands = [(j, t + k) for j in range(b)]
                elif negatives == "time":
                    cands = [(i, s + k) for s in range(valid)]
                else:
                    cands = [(j, s + k) for j in range(b) for s in range(valid)]
                scores = np.array([z[j, s] @ preds[k - 1, i, t] for j, s in cands])
                pos = cands.index((i, t + k))
                m = scores.max()
                losses.append(-(scores[pos] - m - np.log(np.exp(scores - m).sum())))
                hits.append(scores.argmax() == pos)
        out[k] = (np.mean(losses), np.mean(hits), len(cands))
    return out


@pytest.mark.parametrize("negatives", cpc.NEGATIVES)
def test_loss_is_the_numpy_infonce(params, negatives):
    loss, aux = jax.jit(lambda p: cpc.loss_fn(p, {"x": X}, None, model=MODEL,
                                              negatives=negatives))(params)
    preds, maux = MODEL.apply(params, X)
    ref = reference_losses(preds, maux["z"], negatives)
    expected_n = {"batch": lambda k: 3, "time": lambda k: 5 - k, "both": lambda k: 3 * (5 - k)}
    for k, (ref_loss, ref_acc, n) in ref.items():
        assert n == expected_n[negatives](k)
        np.testing.assert_allclose(aux[f"loss_k{k}"], ref_loss, rtol=1e-5)
        np.testing.assert_allclose(aux[f"acc_k{k}"], ref_acc, atol=1e-6)
        # the bound: log N - L_k, in nats
        np.testing.assert_allclose(aux[f"mi_k{k}"], np.log(n) - ref_loss, rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(loss, np.mean([r[0] for r in ref.values()]), rtol=1e-5)
    np.testing.assert_allclose(aux["acc"], np.mean([r[1] for r in ref.values()]), atol=1e-6)


@pytest.mark.slow  # compiles the CPC loss in every negatives mode (~60 s of the fast suite)
def test_the_modes_differ_and_the_bound_is_mi_bounds_infonce(params):
    """The three modes give three different losses on one batch (so the NumPy check above
    tells them apart), and for the "both" block log N - L equals mi_bounds.infonce."""
    losses = {n: float(cpc.loss_fn(params, {"x": X}, None, model=MODEL, negatives=n)[0])
              for n in cpc.NEGATIVES}
    assert len({round(v, 5) for v in losses.values()}) == 3, losses
    preds, aux = MODEL.apply(params, X)
    block = cpc.step_logits(preds[0], aux["z"], 1, "both")[0]
    _, metrics = cpc.loss_fn(params, {"x": X}, None, model=MODEL, negatives="both")
    np.testing.assert_allclose(metrics["mi_k1"], mi_bounds.infonce(block), rtol=1e-5)
    assert float(metrics["mi_k1"]) <= np.log(block.shape[0]) + 1e-6


def test_bad_negatives_is_one_line():
    with pytest.raises(ValueError, match=r"cpc: negatives='queue' is not one of \('batch', "):
        cpc.loss_fn({}, {"x": X}, None, model=MODEL, negatives="queue")


def test_it_jits_once(params):
    count = [0]

    def fn(p, batch):
        count[0] += 1
        return cpc.loss_fn(p, batch, None, model=MODEL)

    step = jax.jit(jax.grad(lambda p, b: fn(p, b)[0]))
    for i in range(3):
        step(params, {"x": X + i})
    assert count[0] == 1


def planted(key, b, t=32):
    """Sinusoids of a random frequency (one of 4) and phase, plus noise 0.1: the past fixes
    the future up to the noise; nothing but the sequence itself tells one from another."""
    kf, kp, kn = jax.random.split(key, 3)
    freq = jnp.array([0.15, 0.3, 0.45, 0.6])[jax.random.randint(kf, (b, 1), 0, 4)]
    phase = jax.random.uniform(kp, (b, 1), maxval=2 * jnp.pi)
    x = jnp.sin(freq * jnp.arange(t) + phase)
    return x + 0.1 * jax.random.normal(kn, x.shape)


@pytest.mark.slow
def test_cpc_learns_a_planted_structure():
    """300 Adam steps (seed 0) on batches of 16 planted sequences, "batch" negatives
    (N = 16, chance 1/16): the mean step accuracy on fresh sequences ends above 0.5, eight
    times chance, starting at most 0.3 (measured: 0.095 -> 0.904)."""
    model = cpc_model.Model(variant="tiny", widths=(16, 16), context_dim=16)
    params = model.init(jax.random.key(0), planted(jax.random.key(0), 2))
    tx = optax.adam(3e-3)
    opt = tx.init(params)
    loss = lambda p, x: cpc.loss_fn(p, {"x": x}, None, model=model, negatives="batch")

    @jax.jit
    def step(p, o, key):
        (_, aux), g = jax.value_and_grad(loss, has_aux=True)(p, planted(key, 16))
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    test_x = planted(jax.random.key(123), 16)
    before = float(loss(params, test_x)[1]["acc"])
    for i in range(300):
        params, opt = step(params, opt, jax.random.fold_in(jax.random.key(1), i))
    after = float(loss(params, test_x)[1]["acc"])
    assert before <= 0.3 and after > 0.5, (before, after)
