"""Cost of each gradient estimator: time per jitted gradient estimate on one problem, and the
surrogate's overhead against hand-written gradients of the same estimators.

The problem is a linear decoder's squared error, f(z) = ||z W - x||^2 per row, with
z of shape (B, D): Normal(loc, scale) latents for the continuous estimators, Bernoulli(logits)
for the discrete ones, K samples each. "Hand-written" gradients compute the same estimate
without a surrogate (REINFORCE: mean_k f_k (b_k - p); RLOO; DisARM's closed-form weights;
pathwise: grad_z f times dz/dtheta by hand); each pair shares the noise, so the numbers are
checked equal before anything is timed. Ours and hand-written run interleaved in rounds in
one process, so machine noise hits both; the ratio (target <= 1.10) is what to read.

  python -m benchmarks.bench_estimators            # B=64, D=32, K=4
  python -m benchmarks.bench_estimators --paired   # the 4 hand-written pairs only
  python -m benchmarks.bench_estimators --smoke    # the 4 pairs, tiny sizes; CI
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_gen import estimators as est  # noqa: E402


def make_problem(batch: int, dim: int, out: int = 16, seed: int = 0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    w = jax.random.normal(k1, (dim, out)) / jnp.sqrt(dim)
    x = jax.random.normal(k2, (batch, out))
    f = lambda z: jnp.sum(jnp.square(z @ w - x), axis=-1)  # (B, D) -> (B,)
    normal = {"loc": 0.1 * jax.random.normal(k3, (batch, dim)), "scale": jnp.ones((batch, dim))}
    logits = 0.5 * jax.random.normal(k3, (batch, dim))
    return f, normal, logits


def _normal(p):
    return est.Normal(p["loc"], p["scale"])


def hand_written(f, k):
    """name -> (params, key) -> gradient, written without the surrogate machinery; each draws
    its noise exactly as the library estimator does (checked before timing)."""

    def reinforce(logits, key, loo=False):
        b = est.Bernoulli(logits).sample(key, (k,))  # (K, B, D)
        fs = jax.vmap(f)(b)  # (K, B)
        if loo:
            fs = (fs - jnp.mean(fs, 0)) * k / (k - 1)  # f_k - mean_{j != k} f_j
        return jnp.mean(fs[..., None] * (b - jax.nn.sigmoid(logits)), 0)

    def disarm(logits, key):
        noise = jax.random.logistic(key, (k,) + logits.shape)
        b, b_anti = (logits - noise > 0).astype(logits.dtype), (logits + noise > 0).astype(
            logits.dtype)
        diff = jax.vmap(f)(b) - jax.vmap(f)(b_anti)  # (K, B)
        weight = 0.5 * (1 - 2 * b_anti) * (b != b_anti) * jax.nn.sigmoid(jnp.abs(logits))
        return jnp.mean(diff[..., None] * weight, 0)

    def pathwise(p, key):
        eps = jax.random.normal(key, (k,) + p["loc"].shape)
        grad_z = jax.vmap(jax.grad(lambda z: jnp.sum(f(z))))(p["loc"] + p["scale"] * eps)
        return {"loc": jnp.mean(grad_z, 0), "scale": jnp.mean(grad_z * eps, 0)}

    return {"score_function": reinforce, "score_function[loo]": lambda p, key: reinforce(
        p, key, loo=True), "disarm": disarm, "pathwise": pathwise}


def estimators():
    """(name, estimator, continuous?) for every estimator that scales to this problem."""
    cont = [est.pathwise(), est.score_function("delta", order=1), est.measure_valued()]
    disc = [est.score_function(), est.score_function("loo"), est.score_function("optimal"),
            est.arm(), est.disarm(), est.gumbel_softmax(0.5), est.straight_through(),
            est.straight_through_gumbel(0.5), est.reinmax(1.0), est.gumbel_rao(0.5, 10),
            est.gapped_straight_through(), est.rebar(), est.relax(), est.indecater()]
    return [(e, True) for e in cont] + [(e, False) for e in disc]


def ours(f, estimator, continuous, k):
    objective = est.expectation(f, _normal if continuous else est.Bernoulli, estimator, k)
    if estimator.stateful:
        state = estimator.init()
        return jax.jit(jax.grad(lambda p, key: jnp.sum(objective(p, key, state)[0])))
    return jax.jit(jax.grad(lambda p, key: jnp.sum(objective(p, key))))


def seconds_per_call(fn, params, keys) -> float:
    start = time.perf_counter()
    for key in keys:
        out = fn(params, key)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / len(keys)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, paired only, seconds")
    parser.add_argument("--paired", action="store_true", help="only the hand-written pairs")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--num_samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    if args.smoke:
        args.batch, args.dim, args.rounds, args.calls = 8, 4, 2, 5
    f, normal, logits = make_problem(args.batch, args.dim)
    k = args.num_samples
    hand = hand_written(f, k)
    keys = jax.random.split(jax.random.key(1), args.calls)
    print(f"{jax.devices()[0].platform}: B={args.batch} D={args.dim} K={k}; "
          f"median of {args.rounds} rounds x {args.calls} calls")
    print(f"{'estimator':32s} {'ours (us)':>10s} {'by hand (us)':>13s} {'ratio':>6s}")
    for estimator, continuous in estimators():
        if (args.smoke or args.paired) and estimator.name not in hand:
            continue  # CI: the paired estimators only (each compile costs ~1 s on CPU)
        params = normal if continuous else logits
        fn = ours(f, estimator, continuous, k)
        by_hand = hand.get(estimator.name)
        if by_hand is not None:
            by_hand = jax.jit(by_hand)
            np.testing.assert_allclose(  # the same estimate, or the timing means nothing
                np.concatenate([np.ravel(x) for x in jax.tree.leaves(fn(params, keys[0]))]),
                np.concatenate([np.ravel(x) for x in jax.tree.leaves(by_hand(params, keys[0]))]),
                rtol=1e-4, atol=1e-5, err_msg=estimator.name)
        for g in (fn, by_hand) if by_hand is not None else (fn,):  # compile, then warm up
            seconds_per_call(g, params, keys[:3])
        t_ours, t_hand = [], []
        for _ in range(args.rounds):  # interleaved: noise hits both
            t_ours.append(seconds_per_call(fn, params, keys))
            if by_hand is not None:
                t_hand.append(seconds_per_call(by_hand, params, keys))
        ours_us = statistics.median(t_ours) * 1e6
        if t_hand:
            hand_us = statistics.median(t_hand) * 1e6
            print(f"{estimator.name:32s} {ours_us:10.1f} {hand_us:13.1f} {ours_us / hand_us:6.2f}")
        else:
            print(f"{estimator.name:32s} {ours_us:10.1f} {'-':>13s} {'-':>6s}")


if __name__ == "__main__":
    main()
