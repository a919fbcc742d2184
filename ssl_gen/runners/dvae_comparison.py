r"""Run the discrete-VAE estimator comparison: one trainer run per estimator and seed.

    python -m ssl_gen.main --config=experiments/dvae_estimators.py:categorical,sweep \
        --workdir=runs/dvae_compare [--config.estimators=rloo,gumbel_softmax] \
        [--config.seeds=0,1]

The config is a trainer config plus the sweep keys (`config.runner == "dvae_comparison"`):
`estimators` (comma-separated names), `seeds` (comma-separated ints), `presets` (name ->
objective kwargs) and `track` ("own", "all" or "every"). Each run gets the trainer config
with those keys removed, the preset merged over the shared `config.objective.kwargs`, the
seed, and the gradient-variance eval set to measure its own estimator (`track="own"`),
every estimator of the sweep at its parameters (`track="all"`, REBAR's
all-on-one-trajectory), every preset of the latent space, trained or not
(`track="every"`: what `make run` shows), or the presets named (`track="rloo,arm"`);
it trains through `trainer.train_and_evaluate` into DIR/<estimator>_s<seed>/.
A run whose directory already holds final metrics for the same config is not retrained,
so an interrupted sweep resumes and a finished one re-renders. Then
`ssl_gen.reports.dvae_report` writes DIR/report.md and DIR/plots/, and the table is printed.

A runner (`ssl_gen.main` dispatches on `config.runner`): it drives the trainer, which is why
it is not in `train/`; `run(config, workdir)` is importable from a notebook or a test.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time

import jax

from ssl_gen import preemption
from ssl_gen.errors import UserError
from ssl_gen.reports import dvae_report
from ssl_gen.train import config_check, trainer
from ssl_gen.train import workdir as workdir_lib

RUNNER = "dvae_comparison"  # the `config.runner` this module runs
SWEEP_KEYS = ("runner", "estimators", "seeds", "presets", "track")
TRACK = ("own", "all", "every")  # config.track: which estimators each run's tracker measures

log = logging.getLogger(__name__)


class SweepError(UserError, ValueError):
    """A mistake in the sweep keys, said in one line."""


def _names(text: str, where: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise SweepError(f"config.{where} is empty")
    return names


def run_config(config, estimator: str, seed: int, tracked: list[str] | None = None):
    """The trainer config of one run of the sweep.

    The run's `objective.kwargs` are the sweep's (shared by every run, e.g. the KL warm-up)
    with the estimator's preset merged over them; its gradient-variance eval, unless the
    config names estimators for it, measures `tracked` (default: the run's own estimator).
    """
    for name in [estimator, *(tracked or [])]:
        if name not in config.presets:
            raise SweepError(f"config.estimators: {name!r} is not one of "
                             f"{list(config.presets)} (presets for this latent space)")
    c = copy.deepcopy(config)
    with c.unlocked():
        preset = c.presets[estimator].to_dict()
        presets = {n: c.presets[n].to_dict() for n in (tracked or [estimator])}
        for key in SWEEP_KEYS:
            if key in c:
                del c[key]
        c.seed = seed
        shared = c.objective.get("kwargs")
        c.objective.kwargs = dict(shared.to_dict() if shared else {}, **preset)
        ev = (c.get("evals") or {}).get("gradient_variance")
        if ev is not None:
            kwargs = dict(ev.get("kwargs") or {})
            if not kwargs.get("estimators"):
                ev.kwargs = dict(kwargs, estimators=presets)
    return c


def _done(workdir: str, config) -> bool:
    """Whether `workdir` holds a finished run of `config` (up to settings that do not change
    training, `workdir.HARMLESS`)."""
    if workdir_lib.finished(workdir) is None:
        return False
    changes = workdir_lib.config_changes(workdir, config)
    return workdir_lib.stored_config(workdir) is not None and not any(
        not workdir_lib.is_harmless(k) for k in changes)


def run(config, workdir: str, *, verbose: bool = False,
        allow_config_change: bool = False) -> dvae_report.Report | None:
    """Trains every (estimator, seed) of the sweep, then writes the report into `workdir`.

    `verbose` prints a line per run (which, how long, its test NLL): the command line's
    progress, since the runs themselves show no progress bar. SIGTERM or Ctrl-C stops the
    sweep within seconds, inside a run (which saves a checkpoint) or between two; then
    None is returned and rerunning the same command resumes. `allow_config_change` lets a
    run directory holding another config resume under this one (recorded there).
    """
    if config.get("runner") != RUNNER:
        raise SweepError(f"config.runner is {config.get('runner')!r}, not {RUNNER!r}: "
                         "add `,sweep` to the config arg (without it this is a trainer config)")
    estimators = _names(config.estimators, "estimators")
    try:
        seeds = [int(s) for s in _names(config.seeds, "seeds")]
    except ValueError as e:
        raise SweepError(f"config.seeds={config.seeds!r}: comma-separated ints ({e})") from None
    track = config.get("track", "own")
    if track in TRACK:
        tracked = {"all": estimators, "every": list(config.presets)}.get(track)
    else:  # a comma-separated list of presets, measured on every run's trajectory
        tracked = _names(track, "track")
        unknown = [n for n in tracked if n not in config.presets]
        if unknown:
            raise SweepError(f"config.track={track!r}: one of {TRACK} or comma-separated "
                             f"presets; {unknown[0]!r} is not one of {list(config.presets)}")
    configs = {(e, s): run_config(config, e, s, tracked) for e in estimators for s in seeds}
    for c in configs.values():  # every run's config is checked before the first trains
        config_check.validate(c)
    workdir_lib.prepare(workdir)
    runs, wall = [], {}
    say = print if (verbose and jax.process_index() == 0) else (lambda *a, **k: None)
    with preemption.guard(enabled=jax.process_count() == 1):
        for i, ((name, seed), c) in enumerate(configs.items(), start=1):
            run_dir = os.path.join(workdir, f"{name}_s{seed}")
            runs.append(dvae_report.Run(name, seed, run_dir))
            head = f"[{i}/{len(configs)}] {name}, seed {seed}:"
            if _done(run_dir, c):
                log.info("%s: finished already, not retrained", run_dir)
                say(f"{head} finished already in {run_dir}, not retrained", flush=True)
                continue
            if preemption.requested():
                _say_stopped(workdir)
                return None
            say(f"{head} training {c.num_train_steps} steps ...", end=" ", flush=True)
            t0 = time.perf_counter()
            final = trainer.train_and_evaluate(c, run_dir,
                                               allow_config_change=allow_config_change)
            wall[run_dir] = time.perf_counter() - t0
            if "preempted" in final:
                say("stopped", flush=True)
                return None
            k, nll = dvae_report.final_nll(final)
            say(f"{wall[run_dir]:.0f} s" + (f", test NLL {nll:.2f}" if k else ""), flush=True)
    notes = ["Wall time (training and evaluations): " + ", ".join(
        f"{os.path.basename(d)} {t:.0f} s" for d, t in wall.items()) + "."] if wall else []
    ds = config.dataset.name
    title = (f"Discrete VAE on {ds}: estimator comparison ({config.model.kwargs.latent}, "
             f"{config.num_train_steps} steps)")
    return dvae_report.write_report(workdir, runs, title=title, notes=notes)


def _say_stopped(workdir: str) -> None:
    name = preemption.describe(preemption.requested())
    if jax.process_index() == 0:
        print(f"\npreempted ({name}) between two runs of the sweep in {workdir}; rerun the "
              "same command to resume", file=sys.stderr, flush=True)


def launch(config, workdir: str, *, allow_config_change: bool = False) -> int:
    """The command line's run (`ssl_gen.main`): the sweep, then its tables printed."""
    report = run(config, workdir, verbose=True, allow_config_change=allow_config_change)
    if report is None:
        return preemption.exit_status(preemption.requested())
    if jax.process_index() == 0:
        print(f"\n{dvae_report.FAIRNESS}\n\n{report.table}\n")
        print(f"Encoder-gradient statistics (mean over evaluations):\n\n"
              f"{report.gradient_table}\n")
        if report.every_table:
            print("Every estimator measured at the trained runs' parameters (mean over their "
                  "trajectories; same f evals = the fair comparison; bias / floor ~ 1 means "
                  f"unbiased):\n\n{report.every_table}\n")
        if report.trajectory_table:
            print(f"Mean log-variance of every estimator along each run's trajectory:\n\n"
                  f"{report.trajectory_table}\n")
        print(f"report.md and plots are in {workdir}")
    return 0

