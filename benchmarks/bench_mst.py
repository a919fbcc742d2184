"""Batched jitted MST (Prim, Kruskal) against scipy's minimum_spanning_tree in a Python loop.

Each size n runs a batch of random complete graphs (weights uniform in [1, 2), float32; no
zeros, which scipy would read as missing edges) through

- `jax.jit(minimum_spanning_tree)` on the whole (B, n, n) batch, for each algorithm;
- `scipy.sparse.csgraph.minimum_spanning_tree` called once per graph on the dense array
  (what a user's loop does; includes scipy's dense-to-sparse conversion), and once per
  graph on a CSR matrix built beforehand (scipy's best case, conversion not timed).

All methods of one size are timed in this process, round-robin, `--repeats` times; the
median is kept, so machine noise hits every method alike and the ratios are what to read.
The batch shrinks as n grows (B = clip(8192 / n, 8, 512)) so the default run takes a couple
of minutes on 2 CPU cores. Compilation is timed separately and excluded. Every JAX forest
is checked against scipy's total weight before anything is printed.

  python -m benchmarks.bench_mst            # n = 16 ... 512
  python -m benchmarks.bench_mst --smoke    # seconds; what CI runs

Prints per-graph times, the speed-up over each scipy loop, and how cost grows with n
(the slope of log time against log n between consecutive sizes, and over the whole range).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

import jax
import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ssl_gen.structured import spanning_tree as st  # noqa: E402

METHODS = ("prim", "kruskal", "scipy_dense", "scipy_csr")


def batch_size(n: int) -> int:
    return int(np.clip(8192 // n, 8, 512))


def random_graphs(rng, batch: int, n: int) -> np.ndarray:
    """(batch, n, n) symmetric float32 weights in [1, 2), zero diagonal."""
    w = rng.uniform(1.0, 2.0, size=(batch, n, n)).astype(np.float32)
    w = np.triu(w, 1)
    return w + np.swapaxes(w, -1, -2)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_size(n: int, batch: int, repeats: int, rng) -> dict:
    weights = random_graphs(rng, batch, n)  # (B, n, n)
    device_weights = jax.device_put(weights)
    csr = [sp.csr_matrix(w) for w in weights]
    jitted = {
        alg: jax.jit(functools.partial(st.minimum_spanning_tree, algorithm=alg))
        for alg in ("prim", "kruskal")
    }
    compile_s = {
        alg: timed(lambda f=f: jax.block_until_ready(f(device_weights)))
        for alg, f in jitted.items()
    }
    # Correctness first: every forest's weight equals scipy's (float32 vs float64 sums).
    reference = np.array([csgraph.minimum_spanning_tree(w).sum() for w in weights])
    for alg, f in jitted.items():
        forest = np.asarray(f(device_weights))
        total = np.sum(np.where(forest, weights, 0.0), axis=(-2, -1), dtype=np.float64) / 2
        np.testing.assert_allclose(total, reference, rtol=1e-5, err_msg=f"{alg}, n={n}")

    runs = {
        "prim": lambda: jax.block_until_ready(jitted["prim"](device_weights)),
        "kruskal": lambda: jax.block_until_ready(jitted["kruskal"](device_weights)),
        "scipy_dense": lambda: [csgraph.minimum_spanning_tree(w) for w in weights],
        "scipy_csr": lambda: [csgraph.minimum_spanning_tree(g) for g in csr],
    }
    samples = {m: [] for m in METHODS}
    for _ in range(repeats):  # round-robin: noise hits every method alike
        for m in METHODS:
            samples[m].append(timed(runs[m]))
    per_graph_us = {m: 1e6 * statistics.median(samples[m]) / batch for m in METHODS}
    return {"n": n, "batch": batch, "us": per_graph_us, "compile_s": compile_s}


def growth(rows: list[dict], method: str) -> tuple[list[float], float]:
    """Slopes of log(time) vs log(n): between consecutive sizes, and a least-squares fit."""
    n = np.log([r["n"] for r in rows])
    t = np.log([r["us"][method] for r in rows])
    steps = list(np.diff(t) / np.diff(n))
    return steps, float(np.polyfit(n, t, 1)[0]) if len(rows) > 1 else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="two small sizes, seconds")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sizes, repeats = ([16, 64], 2) if args.smoke else (args.sizes, args.repeats)

    rng = np.random.default_rng(args.seed)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind} x{jax.device_count()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
        f"median of {repeats} round-robin repeats; times are per graph"
    )
    header = (
        f"{'n':>5} {'batch':>5} | {'prim us':>10} {'kruskal us':>11} {'scipy us':>10} "
        f"{'scipy-csr us':>12} | {'scipy/prim':>10} {'scipy/krus':>10} "
        f"{'csr/prim':>8} {'csr/krus':>8} | compile prim, kruskal"
    )
    print(header)
    rows = []
    for n in sizes:
        batch = 8 if args.smoke else batch_size(n)
        r = bench_size(n, batch, repeats, rng)
        rows.append(r)
        us, c = r["us"], r["compile_s"]
        print(
            f"{n:>5} {batch:>5} | {us['prim']:>10.1f} {us['kruskal']:>11.1f} "
            f"{us['scipy_dense']:>10.1f} {us['scipy_csr']:>12.1f} | "
            f"{us['scipy_dense'] / us['prim']:>10.1f} {us['scipy_dense'] / us['kruskal']:>10.1f} "
            f"{us['scipy_csr'] / us['prim']:>8.1f} {us['scipy_csr'] / us['kruskal']:>8.1f} | "
            f"{c['prim']:.1f} s, {c['kruskal']:.1f} s",
            flush=True,
        )
    print("\ngrowth: time ~ n^p; p between consecutive sizes, then fitted over all sizes")
    for m in METHODS:
        steps, fit = growth(rows, m)
        print(f"  {m:<12} {' '.join(f'{s:5.2f}' for s in steps)}   fit p = {fit:.2f}")


if __name__ == "__main__":
    main()
