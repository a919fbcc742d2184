"""The reference side of `python -m benchmarks.bench_estimators --reference`.

The problem both sides time, and a worker that times optax 0.1.8's `optax.monte_carlo` (the
JAX port of DeepMind's mc_gradients) in its own virtual environment. The module imports only
jax at the top, so the benchmark imports `FUNCTIONS` / `problem` from it; the worker runs as
a script under the reference venv's python (optax 0.1.8 and a jax that runs it), driven by
JSON lines on stdin, one answer per line on stdout:

    {"cmd": "prepare", "function": "cosine", "estimator": "measure_valued",
     "num_samples": 100000, "dim": 10, "calls": 3}      -> {"grad": [[...], [...]]}
    {"cmd": "time", "key": i}                           -> {"seconds": one call's seconds}
    {"cmd": "quit"}

`prepare` compiles and runs the jitted gradient once (so no timing includes a compile);
`time` runs it once on key i of `calls` and times it to its result. The gradient is the mean over
samples of the reference's per-sample jacobians, inside the same jit: the estimate that our
`jax.grad` of `est.expectation` computes.
"""

from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp

# name -> (f of one sample z of shape (D,), closed-form gradient (d/dmean, d/dlog_scale) of
# E f(z), z ~ N(mean, exp(log_scale)^2)): a quadratic (optax's own test function) and a
# non-polynomial f (sum cos, from optax's consistency test).
FUNCTIONS = {
    "quadratic": (
        lambda z: 0.5 * jnp.sum(jnp.square(z)),
        lambda m, s: (m, jnp.square(s)),
    ),
    "cosine": (
        lambda z: jnp.sum(jnp.cos(z)),
        lambda m, s: (-jnp.sin(m) * jnp.exp(-0.5 * s**2),
                      -(s**2) * jnp.cos(m) * jnp.exp(-0.5 * s**2)),
    ),
}
ESTIMATORS = ("score_function", "pathwise", "measure_valued")


def problem(dim: int):
    """(mean, log_scale), both (dim,): means spread over [-1, 1], scales exp(-0.3) ~ 0.74."""
    return jnp.linspace(-1.0, 1.0, dim), jnp.full((dim,), -0.3)


def keys(calls: int):
    """The keys of one timed round, split once here (indexing a key array dispatches a
    slice: done in a timed loop, its first use compiles)."""
    return list(jax.random.split(jax.random.key(1), calls))


def _reference_gradient(function: str, estimator: str, num_samples: int):
    import optax  # only in the reference venv
    from optax import monte_carlo

    f = FUNCTIONS[function][0]
    jacobians = {
        "score_function": monte_carlo.score_function_jacobians,
        "pathwise": monte_carlo.pathwise_jacobians,
        "measure_valued": monte_carlo.measure_valued_jacobians,
    }[estimator]

    def grad(mean, log_scale, key):
        per_sample = jacobians(f, [mean, log_scale], optax.multi_normal, key, num_samples)
        return [jnp.mean(j, axis=0) for j in per_sample]  # (num_samples, D) -> (D,)

    return jax.jit(grad)


def worker() -> None:
    import optax

    print(json.dumps({"jax": jax.__version__, "optax": optax.__version__}), flush=True)
    fn = params = round_keys = None
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "prepare":
            fn = _reference_gradient(msg["function"], msg["estimator"], msg["num_samples"])
            params = problem(msg["dim"])
            round_keys = keys(msg["calls"])
            out = jax.block_until_ready(fn(*params, round_keys[0]))  # compile, run once
            print(json.dumps({"grad": [[float(x) for x in g] for g in out]}), flush=True)
        elif msg["cmd"] == "time":
            start = time.perf_counter()
            jax.block_until_ready(fn(*params, round_keys[msg["key"]]))
            print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)
        elif msg["cmd"] == "quit":
            return


if __name__ == "__main__":
    worker()
