r"""Learning a Chow-Liu tree through gradient estimators over spanning trees.

    python -m ssl_gen.main --config=experiments/chow_liu.py \
        --workdir=runs/chow_liu

The task (issue 5, "a real task"): a spanning tree is the latent of interest.

1. Data. A true tree T* on n nodes, uniform over labelled trees (`chow_liu.random_tree`, a
   uniform Pruefer sequence), edge correlations r_e ~ U[low, high] with random signs, and N
   samples of the zero-mean, unit-variance Gaussian Markov on T* (`structured.chow_liu`).
2. The exact answer. The empirical mutual informations I_ij = -1/2 log(1 - rho_ij^2) and the
   Chow-Liu tree T_CL = argmax_T \sum_{(i,j) in T} I_ij, the maximum-likelihood tree
   (Chow & Liu 1968, "Approximating discrete probability distributions with dependence
   trees"; the Gaussian mutual information: Cover & Thomas, Sec. 8.5).
3. Learning. theta (one score per edge of K_n, zero at the start: the uniform distribution
   over trees) maximizes J(theta) = E_{T ~ p_theta}[f(T)], p_theta(T) ∝ exp(\sum_{e in T}
   theta_e) (`est.SpanningTree`), f(T) = \sum_{(i,j) in T} I_ij: the tree model's
   log-likelihood per sample up to a T-free constant (N f(T) - N \sum_i H_i). Adam on
   -J through each estimator of the config: the score function with the leave-one-out
   baseline (unbiased), the stochastic softmax trick (Paulus et al. 2020; relaxed tree =
   marginals((theta + G) / tau)), its straight-through version, and the exact gradient by
   enumerating the n^(n-2) trees (n <= 8).
4. Scores. The learned tree is argmax_T p_theta(T) = the maximum spanning tree of theta;
   its edge precision/recall against T_CL and against T* (both trees have n - 1 edges, so
   precision = recall; both are reported). J is evaluated exactly for every estimator: f is
   linear in the adjacency, so J(theta) = \sum_e mu_e(theta) I_e with mu the Kirchhoff edge
   marginals, and grad J by autodiff of that is the true gradient (the variance table's
   truth). Note: the relaxed estimators follow a different objective (perturb-and-MAP's
   E_G[f(argmax_T <theta + G, T>)], or its relaxation), so J measures them on the Gibbs
   distribution they were not built for; f(argmax) compares all of them on equal terms.
5. Gradient variance (`est.grad_samples`, `variance.gradient_stats`) at a few points along
   each run: trace of the covariance, SNR, cosine and bias against the true gradient.
6. Perturb-and-MAP vs Gibbs: on K4 with nonuniform theta, the probability of each of the 16
   trees under p_theta (exact) and under perturb-and-MAP (Monte Carlo), with Wilson samples
   as the Monte Carlo noise floor; total variation distances.

The workdir gets report.md (every table), rows.json and the PNG plots (objective vs step,
gradient variance vs step). `run(config, workdir)` is importable (a notebook, the tests).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_gen import estimators as est
from ssl_gen.errors import UserError
from ssl_gen.estimators import variance
from ssl_gen.reports import estimator_report
from ssl_gen.runners import print_tables
from ssl_gen.runners.toys import Report, jsonable, make_estimator
from ssl_gen.structured import chow_liu as cl
from ssl_gen.structured import spanning_tree as st

RUNNER = "chow_liu"  # the `config.runner` this module runs

RESULT_COLUMNS = (
    ("name", "estimator"),
    ("num_samples", "K"),
    ("precision_cl", "prec vs CL"),
    ("recall_cl", "rec vs CL"),
    ("precision_true", "prec vs true"),
    ("recall_true", "rec vs true"),
    ("objective", "J(theta) final"),
    ("f_argmax", "f(argmax)"),
    ("f_chow_liu", "f(CL) = max"),
    ("variance_first", "grad var start"),
    ("variance_last", "grad var end"),
    ("train_s", "train s"),
)
VARIANCE_COLUMNS = (("name", "estimator"), ("step", "step"), ("variance", "variance"),
                    ("snr", "SNR"), ("cosine", "cosine"), ("bias", "bias"),
                    ("bias_floor", "bias floor"))


def edges_to_theta(w: jax.Array, n: int) -> jax.Array:
    """Edge scores on the upper triangle (n (n - 1) / 2,) -> a symmetric (n, n) theta."""
    iu = np.triu_indices(n, 1)
    upper = jnp.zeros((n, n), w.dtype).at[iu].set(w)
    return upper + upper.T


def make_problem(config, key: jax.Array) -> dict:
    """The true tree, its edge correlations, the data, the mutual information, T_CL."""
    n = config.num_nodes
    k_tree, k_r, k_sign, k_data = jax.random.split(key, 4)
    true_tree = cl.random_tree(k_tree, n)
    low, high = config.correlation
    r = np.asarray(jax.random.uniform(k_r, (n, n), minval=low, maxval=high))
    r = r * np.where(np.asarray(jax.random.bernoulli(k_sign, 0.5, (n, n))), 1.0, -1.0)
    r = np.triu(r, 1) + np.triu(r, 1).T
    data = cl.random_tree_gaussian(k_data, true_tree, config.num_data, r)
    mi = cl.gaussian_mutual_information(data)
    return dict(true_tree=true_tree, correlation=r, data=data, mi=mi,
                chow_liu=np.asarray(cl.chow_liu_tree(mi)))


def exact_objective(w: jax.Array, mi: jax.Array) -> jax.Array:
    """J(theta) = E_{p_theta}[f] = \\sum_e mu_e(theta) I_e (f is linear in the tree)."""
    return cl.tree_score(st.marginals(edges_to_theta(w, mi.shape[-1])), mi)


# Compiled once for every estimator (mi is an argument, not a constant).
_exact_values = jax.jit(jax.vmap(exact_objective, (0, None)))
_exact_grad = jax.jit(jax.grad(exact_objective))


def train(name: str, spec, config, problem: dict, key: jax.Array) -> tuple[dict, list]:
    """Adam on -J through one estimator; its result row and its variance rows."""
    n, mi = config.num_nodes, problem["mi"]
    estimator, num_samples = make_estimator(spec)
    f = lambda tree: cl.tree_score(tree, mi)
    dist_fn = lambda w: est.SpanningTree(edges_to_theta(w, n))
    objective = est.expectation(f, dist_fn, estimator, num_samples)
    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def run_steps(w, opt_state, keys):
        def step(carry, k):
            w, opt_state = carry
            grad = jax.grad(lambda v: -jnp.sum(objective(v, k)))(w)
            updates, opt_state = optimizer.update(grad, opt_state)
            w = optax.apply_updates(w, updates)
            return (w, opt_state), w

        return jax.lax.scan(step, (w, opt_state), keys)

    w0 = jnp.zeros((n * (n - 1) // 2,), jnp.float32)
    k_train, k_var = jax.random.split(key)
    start = time.perf_counter()
    (w, _), ws = run_steps(w0, optimizer.init(w0), jax.random.split(k_train, config.steps))
    w.block_until_ready()
    seconds = time.perf_counter() - start  # compile included
    ws = jnp.concatenate([w0[None], ws])  # (steps + 1, E): theta after each step

    logged = np.arange(0, config.steps + 1, config.log_every)
    values = np.asarray(_exact_values(ws[logged], mi))

    # The exact estimator has no variance: two replicas (its enumeration is large).
    replicas = 2 if spec["name"] == "exact" else config.variance_replicas
    points = np.unique(np.linspace(0, config.steps, config.variance_points).astype(int))
    grad_fn = jax.jit(lambda v, k: est.grad_samples(objective, v, k, replicas))
    var_rows = []
    for s, k in zip(points, jax.random.split(k_var, len(points)), strict=True):
        stats = variance.gradient_stats(grad_fn(ws[s], k), _exact_grad(ws[s], mi))
        var_rows.append(dict(name=name, step=int(s), replicas=replicas,
                             **{k_: stats[k_] for k_ in ("variance", "snr", "cosine", "bias",
                                                          "bias_floor")}))

    argmax = np.asarray(st.maximum_spanning_tree(edges_to_theta(w, n)))
    p_cl, r_cl = cl.edge_precision_recall(argmax, problem["chow_liu"])
    p_true, r_true = cl.edge_precision_recall(argmax, problem["true_tree"])
    row = dict(
        name=name, estimator=spec["name"], num_samples=num_samples,
        precision_cl=p_cl, recall_cl=r_cl, precision_true=p_true, recall_true=r_true,
        objective=float(values[-1]), f_argmax=float(f(argmax)),
        f_chow_liu=float(f(problem["chow_liu"])),
        variance_first=var_rows[0]["variance"], variance_last=var_rows[-1]["variance"],
        train_s=seconds, curve=dict(step=logged.tolist(), objective=values.tolist()),
        theta=np.asarray(w).tolist())
    return row, var_rows


# --- perturb-and-MAP vs Gibbs on a small graph ------------------------------------------------

K4_THETA = (2.0, 0.0, -1.0, 1.0, 0.5, -0.5)  # edges (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)


def _codes(trees: np.ndarray) -> np.ndarray:
    """A tree's edge set as an integer (bit k = upper-triangle edge k)."""
    n = trees.shape[-1]
    bits = trees[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]].astype(np.int64)
    return bits @ (1 << np.arange(bits.shape[-1], dtype=np.int64))


def perturb_and_map_vs_gibbs(num_samples: int, key: jax.Array) -> tuple[list, dict]:
    """Tree probabilities on K4: exact Gibbs, perturb-and-MAP (MC) and Wilson (MC)."""
    theta = edges_to_theta(jnp.asarray(K4_THETA, jnp.float32), 4)
    trees = st.enumerate_trees(4)  # (16, 4, 4)
    p_gibbs = np.exp(np.asarray(st.log_prob(theta, jnp.asarray(trees))))
    codes = _codes(trees)
    k_pam, k_wil = jax.random.split(key)
    freqs = {}
    for label, sampler, k in (("perturb_and_map", st.perturb_and_map, k_pam),
                              ("wilson", st.sample, k_wil)):
        samples = jax.jit(jax.vmap(lambda k_, s=sampler: s(k_, theta)))(
            jax.random.split(k, num_samples))
        idx = np.searchsorted(np.sort(codes), _codes(np.asarray(samples)))
        counts = np.bincount(np.argsort(codes)[idx], minlength=len(trees))
        freqs[label] = counts / num_samples
    iu = np.triu_indices(4, 1)
    rows = []
    for t in np.argsort(-p_gibbs):
        edges = " ".join(f"{i}{j}" for i, j in zip(*iu, strict=True) if trees[t, i, j])
        score = float(np.sum(trees[t][iu] * np.asarray(K4_THETA)))
        rows.append(dict(name=edges, score=score, gibbs=float(p_gibbs[t]),
                         perturb_and_map=float(freqs["perturb_and_map"][t]),
                         wilson=float(freqs["wilson"][t])))
    tv = {label: 0.5 * float(np.abs(freqs[label] - p_gibbs).sum()) for label in freqs}
    return rows, tv


# --- the report --------------------------------------------------------------------------

def run(config, workdir: str) -> Report:
    """Runs the experiment; writes report.md, rows.json and the plots into `workdir`."""
    if config.get("runner") != RUNNER:
        raise ValueError(f"config.runner is {config.get('runner')!r}, not {RUNNER!r}")
    if config.num_nodes > 8 and "exact" in [s["name"] for s in config.estimators.values()]:
        raise ValueError("the exact estimator enumerates n^(n-2) trees: num_nodes <= 8")
    os.makedirs(workdir, exist_ok=True)
    key = jax.random.key(config.seed)
    k_problem, k_train, k_pam = jax.random.split(key, 3)
    problem = make_problem(config, k_problem)
    results, var_rows = [], []
    train_keys = jax.random.split(k_train, len(config.estimators))
    for (name, spec), k in zip(config.estimators.items(), train_keys, strict=True):
        row, rows = train(name, spec, config, problem, k)
        results.append(row)
        var_rows.extend(rows)
    pam_rows, tv = perturb_and_map_vs_gibbs(config.pam_num_samples, k_pam)

    n = config.num_nodes
    p_cl_true, _ = cl.edge_precision_recall(problem["chow_liu"], problem["true_tree"])
    setup = (
        f"n = {n} nodes, N = {config.num_data} Gaussian samples Markov on a uniform random "
        f"tree, |edge correlation| ~ U{tuple(config.correlation)}, seed {config.seed}; "
        f"{config.steps} Adam steps (lr {config.learning_rate}) from theta = 0.\n\n"
        "Objective: J(theta) = E_{T ~ p_theta}[f(T)], p_theta(T) ∝ exp(sum_{e in T} "
        "theta_e), f(T) = sum_{(i,j) in T} I_ij with I_ij = -1/2 log(1 - rho_ij^2) the "
        "empirical Gaussian mutual information: the tree model's log-likelihood per sample "
        "is f(T) - sum_i H(X_i) (Chow & Liu 1968), so max_T f = f(T_CL), the Chow-Liu tree "
        "(maximum spanning tree of I). J is computed exactly (sum_e mu_e I_e). The learned "
        "tree is the maximum spanning tree of theta (the mode of p_theta).\n\n"
        f"The Chow-Liu tree agrees with the true tree on {p_cl_true:.0%} of its edges; "
        f"f(T_CL) = {results[0]['f_chow_liu']:.4f}, f(true tree) = "
        f"{float(cl.tree_score(problem['true_tree'], problem['mi'])):.4f}.")
    tables = {
        "Setup": setup,
        "Learned trees (per estimator)": estimator_report.markdown_table(
            results, RESULT_COLUMNS),
        "Gradient variance along training (trace of the covariance; truth = grad of the "
        "exact J)": estimator_report.markdown_table(var_rows, VARIANCE_COLUMNS),
        "Perturb-and-MAP vs Gibbs on K4 (theta = "
        + ", ".join(f"{v:g}" for v in K4_THETA) + " on edges 01 02 03 12 13 23)": (
            estimator_report.markdown_table(
                pam_rows, (("name", "tree"), ("score", "sum theta"), ("gibbs", "Gibbs exact"),
                           ("perturb_and_map", "perturb-and-MAP (MC)"),
                           ("wilson", "Wilson (MC)")))
            + f"\n\nTotal variation to the Gibbs distribution ({config.pam_num_samples} "
            f"samples each): perturb-and-MAP {tv['perturb_and_map']:.4f}, Wilson "
            f"{tv['wilson']:.4f} (the Monte Carlo noise floor). Perturb-and-MAP with "
            "i.i.d. Gumbel edge noise is not the Gibbs distribution over trees: it puts "
            "more mass on the highest-scoring trees."),
    }
    curves = {r["name"]: r["curve"] for r in results}
    plots = [estimator_report.plot_curves(
        curves, os.path.join(workdir, "objective.png"),
        title="exact J = E_p[sum of MI on tree edges] vs Adam step")]
    var_curves = {}
    for r in var_rows:
        if r["variance"] > 0:
            c = var_curves.setdefault(r["name"], dict(step=[], log10_variance=[]))
            c["step"].append(r["step"])
            c["log10_variance"].append(float(np.log10(r["variance"])))
    if var_curves:
        plots.append(estimator_report.plot_curves(
            var_curves, os.path.join(workdir, "variance.png"),
            title="log10 gradient variance (trace) vs step"))
    rows = dict(results=results, variance=var_rows, perturb_and_map=pam_rows,
                total_variation=tv,
                problem=dict(true_tree=problem["true_tree"], chow_liu=problem["chow_liu"],
                             mutual_information=np.asarray(problem["mi"])))
    text = "\n\n".join(f"## {title}\n\n{table}" for title, table in tables.items())
    with open(os.path.join(workdir, "report.md"), "w") as fh:
        fh.write(f"# Chow-Liu trees through gradient estimators\n\n{text}\n")
    with open(os.path.join(workdir, "rows.json"), "w") as fh:
        json.dump(jsonable(rows), fh, indent=1)
    return Report(tables=tables, rows=rows, plots=plots)


def launch(config, workdir: str, *, allow_config_change: bool = False) -> int:
    """The command line's run (`ssl_gen.main`): the task, then its tables printed."""
    del allow_config_change  # nothing here resumes
    try:
        out = run(config, workdir)
    except ValueError as e:  # run()'s own checks of the config, each one line
        if isinstance(e, UserError):
            raise
        raise RunnerError(str(e)) from None
    files = f"report.md, rows.json and {len(out.plots)} plots"
    return print_tables(out.tables, f"{files} are in {workdir}")


class RunnerError(UserError, ValueError):
    """A bad runner setting, said in one line."""

