"""Cost of each gradient estimator: time per jitted gradient estimate on one problem, the
surrogate's overhead against hand-written gradients of the same estimators, and our Gaussian
estimators against optax 0.1.8's `optax.monte_carlo` (the JAX port of DeepMind's
mc_gradients).

The problem is a linear decoder's squared error, f(z) = ||z W - x||^2 per row, with
z of shape (B, D): Normal(loc, scale) latents for the continuous estimators, Bernoulli(logits)
for the discrete ones, K samples each. "Hand-written" gradients compute the same estimate
without a surrogate (REINFORCE: mean_k f_k (b_k - p); RLOO; DisARM's closed-form weights;
pathwise: grad_z f times dz/dtheta by hand); each pair shares the noise, so the numbers are
checked equal before anything is timed. Ours and hand-written run in one process,
alternating call by call (a b, b a, ...), each call timed to its result, so machine noise
hits both; the ratio, the median over adjacent pairs of ours / hand-written (target
<= 1.10), is what to read. Every function is compiled and run once before anything is
timed, and the keys are split once beforehand (indexing a key array in the timed loop
dispatched, and on first use compiled, a slice per call).

  python -m benchmarks.bench_estimators            # B=64, D=32, K=4
  python -m benchmarks.bench_estimators --paired   # the 4 hand-written pairs only
  python -m benchmarks.bench_estimators --smoke    # the 4 pairs, tiny sizes; CI
  python -m benchmarks.bench_estimators --reference   # against optax 0.1.8 (below)

--reference: the gradient of E[f(z)], z ~ N(mean, exp(log_scale)^2) in D = 10 dimensions,
with respect to mean and log-scale, from 100,000 samples, by the score function (no
baseline), pathwise and (coupled) measure-valued estimators: ours (`jax.grad` of
`est.expectation`) in this process, optax 0.1.8's `*_jacobians` averaged over samples inside
the same jit in a subprocess of its own venv (benchmarks/optax_reference.py), alternating
call by call, for f = ||z||^2 / 2 and f = sum(cos z) (optax's test functions). Both
gradients are checked against the closed form (the |error| columns: Monte Carlo error,
~1e-2 here) and the ratio is ours / reference. It needs the venv, made once (the default
path; --reference_python names another):

  python3 -m venv /tmp/optax018-venv && /tmp/optax018-venv/bin/pip install optax==0.1.8

(pip resolves the newest jax and jaxlib with optax 0.1.8; on Python 3.11 that was the same
jax as ours, 0.10.2.) The other modes never touch it.
"""

from __future__ import annotations

import argparse
import json
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


def seconds(fn, params, key) -> float:
    """One call's seconds, timed to its result."""
    start = time.perf_counter()
    jax.block_until_ready(fn(params, key))
    return time.perf_counter() - start


def warm_up(fn, params, key) -> None:
    """Compile and run once: no timed call includes a compile or a first dispatch."""
    jax.block_until_ready(fn(params, key))


def interleaved(time_a, time_b, n: int) -> tuple[list[float], list[float]]:
    """Seconds of n calls of a and n of b, alternating call by call (a b, b a, a b, ...):
    `time_a(i)` times call i. Adjacent calls see the same machine load, and a call another
    process preempted is an outlier that the medians drop."""
    t_a, t_b = [], []
    for i in range(n):
        if i % 2 == 0:
            t_a.append(time_a(i))
            t_b.append(time_b(i))
        else:
            t_b.append(time_b(i))
            t_a.append(time_a(i))
    return t_a, t_b


def paired_ratio(t_a: list[float], t_b: list[float]) -> float:
    """The median over i of a's call i / b's call i (adjacent calls)."""
    return statistics.median(a / b for a, b in zip(t_a, t_b, strict=True))


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def run_pairs(args) -> None:
    """Every estimator (or the hand-written pairs only): ours and, where one exists, the
    hand-written gradient on the same noise."""
    f, normal, logits = make_problem(args.batch, args.dim)
    k = args.num_samples
    hand = hand_written(f, k)
    # A list, split once: indexing a key array dispatches a slice per call (the old timed
    # loop did, and its first round timed that slice's ~1 s compile).
    keys = list(jax.random.split(jax.random.key(1), args.calls))
    n = args.rounds * args.calls
    print(f"{jax.devices()[0].platform}: B={args.batch} D={args.dim} K={k}; median of "
          f"{args.rounds} x {args.calls} calls, each timed to its result, ours and by hand "
          "alternating call by call; ratio: median of adjacent calls' ours / by hand")
    print(f"{'estimator':32s} {'ours (us)':>10s} {'by hand (us)':>13s} {'ratio':>6s}")
    for estimator, continuous in estimators():
        if (args.smoke or args.paired) and estimator.name not in hand:
            continue  # CI: the paired estimators only (each compile costs ~1 s on CPU)
        params = normal if continuous else logits
        fn = ours(f, estimator, continuous, k)
        warm_up(fn, params, keys[0])
        time_ours = lambda i, fn=fn, params=params: seconds(fn, params, keys[i % len(keys)])
        by_hand = hand.get(estimator.name)
        if by_hand is None:
            ours_us = statistics.median(time_ours(i) for i in range(n)) * 1e6
            print(f"{estimator.name:32s} {ours_us:10.1f} {'-':>13s} {'-':>6s}")
            continue
        by_hand = jax.jit(by_hand)
        np.testing.assert_allclose(  # the same estimate, or the timing means nothing
            _flat(fn(params, keys[0])), _flat(by_hand(params, keys[0])),
            rtol=1e-4, atol=1e-5, err_msg=estimator.name)
        warm_up(by_hand, params, keys[0])
        t_ours, t_hand = interleaved(
            time_ours, lambda i, g=by_hand, params=params: seconds(g, params, keys[i % len(keys)]),
            n)
        ours_us, hand_us = statistics.median(t_ours) * 1e6, statistics.median(t_hand) * 1e6
        print(f"{estimator.name:32s} {ours_us:10.1f} {hand_us:13.1f} "
              f"{paired_ratio(t_ours, t_hand):6.2f}")


REFERENCE_PYTHON = "/tmp/optax018-venv/bin/python"
REFERENCE_VENV = ("python3 -m venv /tmp/optax018-venv && "
                  "/tmp/optax018-venv/bin/pip install optax==0.1.8")


class _Reference:
    """The optax 0.1.8 worker (benchmarks/optax_reference.py) in a subprocess of its venv."""

    def __init__(self, python: str):
        import subprocess

        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optax_reference.py")
        self.proc = subprocess.Popen([python, script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.versions = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the optax reference worker exited ({self.proc.wait()})")
        return json.loads(line)

    def ask(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        return self._read()

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait()


def run_reference(args) -> None:
    """Ours against optax 0.1.8's monte_carlo in its venv, alternating call by call."""
    from benchmarks.optax_reference import ESTIMATORS, FUNCTIONS, keys, problem

    if not os.path.exists(args.reference_python):
        sys.exit(f"no optax 0.1.8 venv at {args.reference_python}; create it with: "
                 f"{REFERENCE_VENV}")
    ref = _Reference(args.reference_python)
    n, d = args.reference_samples, args.reference_dim
    mean, log_scale = problem(d)
    params = {"mean": mean, "log_scale": log_scale}
    dist_fn = lambda p: est.Normal(p["mean"], jnp.exp(p["log_scale"]))
    ours_estimators = {"score_function": est.score_function(), "pathwise": est.pathwise(),
                       "measure_valued": est.measure_valued()}
    round_keys = keys(args.calls)
    print(f"{jax.devices()[0].platform}: ours (jax {jax.__version__}) against optax "
          f"{ref.versions['optax']} (jax {ref.versions['jax']}, {args.reference_python}); "
          f"N={n} samples, D={d}; median of {args.rounds} x {args.calls} calls, ours and "
          "reference alternating call by call; ratio: median of adjacent calls' ours / "
          "reference")
    print(f"{'f':10s} {'estimator':15s} {'ours (ms)':>10s} {'ref (ms)':>10s} {'ratio':>6s} "
          f"{'|err| ours':>11s} {'|err| ref':>10s}")
    try:
        for fname, (f, truth) in FUNCTIONS.items():
            true_grad = _flat(truth(mean, jnp.exp(log_scale)))
            for name in ESTIMATORS:
                objective = est.expectation(f, dist_fn, ours_estimators[name], n)
                fn = jax.jit(jax.grad(lambda p, k, o=objective: jnp.sum(o(p, k))))
                warm_up(fn, params, round_keys[0])
                g_ours = fn(params, round_keys[0])
                g_ours = _flat([g_ours["mean"], g_ours["log_scale"]])
                g_ref = np.ravel(ref.ask(cmd="prepare", function=fname, estimator=name,
                                         num_samples=n, dim=d, calls=args.calls)["grad"])
                t_ours, t_ref = interleaved(
                    lambda i, fn=fn: seconds(fn, params, round_keys[i % args.calls]),
                    lambda i: ref.ask(cmd="time", key=i % args.calls)["seconds"],
                    args.rounds * args.calls)
                print(f"{fname:10s} {name:15s} {statistics.median(t_ours) * 1e3:10.1f} "
                      f"{statistics.median(t_ref) * 1e3:10.1f} {paired_ratio(t_ours, t_ref):6.2f} "
                      f"{np.max(np.abs(g_ours - true_grad)):11.4f} "
                      f"{np.max(np.abs(g_ref - true_grad)):10.4f}", flush=True)
    finally:
        ref.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, paired only, seconds")
    parser.add_argument("--paired", action="store_true", help="only the hand-written pairs")
    parser.add_argument("--reference", action="store_true",
                        help="ours against optax 0.1.8's monte_carlo (needs its venv)")
    parser.add_argument("--reference_python", default=REFERENCE_PYTHON,
                        help="the python of a venv with optax 0.1.8")
    parser.add_argument("--reference_samples", type=int, default=100_000)
    parser.add_argument("--reference_dim", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--num_samples", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7, help="passes over the --calls keys")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per round (default 200; 3 with --reference)")
    args = parser.parse_args(argv)
    if args.calls is None:
        args.calls = 3 if args.reference else 200
    if args.smoke:
        args.batch, args.dim, args.rounds, args.calls = 8, 4, 2, 5
    if args.reference:
        run_reference(args)
    else:
        run_pairs(args)


if __name__ == "__main__":
    main()
