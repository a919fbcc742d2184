"""The training loop: `train_and_evaluate(config, workdir)`, model-agnostic.

The config names the model (`ssl_gen.models.<name>.Model(**kwargs)`), the objective
(`ssl_gen.objectives.<name>`: a `loss_fn` or several `parts`, see `ssl_gen.train.objective`)
and the evaluations (`ssl_gen.evals.<name>.evaluate(state, ctx)`); this file knows none of
them. Reading path: `build` (validate -> data -> model, objective, optimizers -> abstract
state) -> `_start` (restore, or init and `init_from`) -> loop (step; log; evaluate; save;
preemption) -> final evals and plots. The state and the step are `ssl_gen.train.step`'s.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ssl_gen import data, preemption
from ssl_gen.errors import UserError
from ssl_gen.evals import EvalContext, EvalInterrupted
from ssl_gen.train import checkpoint, config_check, metrics, optim, sharding
from ssl_gen.train import init as init_lib
from ssl_gen.train import objective as objective_lib
from ssl_gen.train import workdir as workdir_lib
from ssl_gen.train.config_check import ConfigError
from ssl_gen.train.step import TrainStep, init_state, loss_inputs

log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the run stopped at the last good checkpoint."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


class Build(NamedTuple):
    """Everything a run needs, built and checked before anything compiles."""

    mesh: Any
    repl: Any  # the replicated NamedSharding
    batch_sharding: Any
    state_sharding: Any
    train_source: Any
    eval_source: Any
    pipeline: Any
    model: Any
    objective: objective_lib.Objective
    txs: dict  # part name -> optax optimizer
    init_fn: Any  # key -> initial state (jit it with out_shardings=state_sharding)
    init_key: Any
    train_key: Any
    eval_key: Any
    abstract_state: Any  # ShapeDtypeStructs with shardings: the restore target


def build(config, workdir: str) -> Build:
    """Validates the config, builds data, model, objective and optimizers, and checks by
    abstract evaluation that they fit together (one-line ConfigError otherwise).

    `train_and_evaluate` uses it, and so do tests and benchmarks.
    """
    del workdir  # the run's files are the loop's business
    config_check.validate(config)
    mesh = sharding.make_mesh(config.get("num_devices"))
    try:
        sharding.check_batch_size(config.batch_size, mesh)
        sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ds = config.dataset
    try:  # the splits, the training pipeline and the sources evaluations read (ssl_gen.data)
        inputs = data.build_inputs(ds, batch_size=config.batch_size, seed=config.seed)
    except data.DatasetNotFoundError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    pipeline, example = inputs.pipeline, inputs.example
    train_source, eval_source = inputs.train_source, inputs.eval_source

    model = config_check.model_class(config)(**config.model.get("kwargs", {}))
    input_key = config.model.get("input_key", "image")
    if input_key not in example:
        near = difflib.get_close_matches(input_key, list(example), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"config.model.input_key={input_key!r} is not a field of dataset "
                          f"{ds.name!r} (its fields: {', '.join(sorted(example))}){hint}")
    objective = objective_lib.resolve(config, model)
    txs = {p.name: optim.make_optimizer(objective_lib.optimizer_config(config, p.name),
                                        config.num_train_steps)
           for p in objective.parts}

    key = jax.random.key(config.seed)
    init_key, train_key, eval_key = (jax.random.fold_in(key, i) for i in range(3))
    n_proc = jax.process_count()
    dtype = lambda v: jax.dtypes.canonicalize_dtype(v.dtype)  # int64 -> int32 without x64
    abstract_batch = {k: jax.ShapeDtypeStruct((v.shape[0] * n_proc,) + v.shape[1:], dtype(v))
                      for k, v in example.items()}
    one = {k: jnp.zeros((1,) + v.shape[1:], dtype(v)) for k, v in example.items()}

    def init_fn(k):
        rngs = {"params": k, "sample": jax.random.fold_in(k, 1),
                "dropout": jax.random.fold_in(k, 2)}
        return init_state(model.init(rngs, one[input_key]), objective, txs)

    # Shapes are checked by abstract evaluation (tracing, no compilation): a model that does
    # not fit the data is a one-line error here, not an XLA stack trace.
    try:
        abstract_state = jax.eval_shape(init_fn, init_key)
        for part in objective.parts:
            jax.eval_shape(lambda p, b, k, inputs, f=part.loss_fn: f(p, b, k, **inputs),
                           abstract_state["params"], abstract_batch, train_key,
                           loss_inputs(part.loss_fn, abstract_state))
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"model/objective do not fit dataset {ds.name!r}: {_first_line(e)}") from None

    for name, ev in (config.get("evals") or {}).items():  # eval weights exist, by shape
        try:
            state_view(abstract_state, ev.get("weights"))
        except ValueError as e:
            raise ConfigError(str(e).replace("evals.*.", f"evals.{name}.")) from None

    repl = sharding.replicated(mesh)
    state_sharding = sharding.state_shardings(
        abstract_state, mesh, config.get("sharding", "replicated"),
        config.get("fsdp_min_size", sharding.FSDP_MIN_SIZE))
    abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
        state_sharding)
    return Build(
        mesh=mesh, repl=repl, batch_sharding=sharding.batch_sharded(mesh),
        state_sharding=state_sharding, train_source=train_source, eval_source=eval_source,
        pipeline=pipeline, model=model, objective=objective, txs=txs, init_fn=init_fn,
        init_key=init_key, train_key=train_key, eval_key=eval_key, abstract_state=abstract_state)


def _eval_periods(config) -> list[int]:
    """The every_steps of each configured evaluation (0: only at the end)."""
    return [ev.get("every_steps", 0) for ev in (config.get("evals") or {}).values()]


def _same_at_end(ev, step: int) -> bool:
    """Whether an eval is due at `step` and its final run there would be the same call (no
    `final_kwargs`): the final evaluation then runs it once and logs it in both splits."""
    every = ev.get("every_steps", 0)
    return bool(every) and step % every == 0 and not ev.get("final_kwargs")


def _stop_requested() -> bool:
    return preemption.requested() is not None


def _eval_batches(config, b):
    """The eval split as global device batches; stops between batches on a preemption."""
    for x in data.eval_batches(b.eval_source, config.eval_batch_size):
        if _stop_requested():
            raise EvalInterrupted("evaluation interrupted")
        yield data.make_global_batch(x, b.batch_sharding)


def _evaluate(config, b, state, step: int, workdir: str, writer, final: bool,
              last: int | None = None) -> dict:
    """Runs the configured evaluations due at `step` (all of them when final).

    At the last step (`last`), an eval that the final evaluation repeats unchanged is left
    to it (`_same_at_end`), and the final evaluation writes its metrics to the eval split
    too, so curves still end at the last step without computing it twice. A preemption
    raises `EvalInterrupted` between batches (or an eval's own chunks); nothing of the
    interrupted step is written, so the resumed run evaluates it again.
    """
    out, periodic, owner = {}, {}, {}  # owner: metric -> the eval that reported it
    for name, ev in (config.get("evals") or {}).items():
        every = ev.get("every_steps", 0)
        if not final and not (every and step % every == 0):
            continue
        if not final and step == last and _same_at_end(ev, step):
            continue
        fn = config_check.import_symbol("ssl_gen.evals", ev.get("module", name), "evaluate", name)
        kwargs = dict(ev.get("kwargs") or {})
        if final:
            kwargs.update(ev.get("final_kwargs") or {})
        ctx = EvalContext(
            model=b.model, rng=jax.random.fold_in(b.eval_key, step), step=step,
            workdir=workdir, train_source=b.train_source, eval_source=b.eval_source,
            is_main=jax.process_index() == 0,
            progress_bar=bool(config.get("progress_bar", True)),
            eval_batches=lambda: _eval_batches(config, b), should_stop=_stop_requested)
        ctx.check_stop()
        result = fn(state_view(state, ev.get("weights")), ctx, **kwargs)
        clash = sorted(set(result) & set(owner))
        if clash:  # one row holds every eval's metrics: a second writer would overwrite
            raise ValueError(f"config.evals.{name} and config.evals.{owner[clash[0]]} both "
                             f"report {clash[0]!r}: rename one eval's metric")
        owner.update(dict.fromkeys(result, name))
        out.update(result)
        if final and _same_at_end(ev, step):
            periodic.update(result)
    if periodic:
        writer.write(step, periodic, split="eval")
    if out:
        writer.write(step, out, split="final" if final else "eval")
    return out


def state_view(state: dict, weights: str | None) -> dict:
    """`state` with its "params" replaced by the copy at `weights` ('/'-path into the state,
    e.g. "extra/ema"), so an evaluation scores EMA or momentum weights; `state` itself when
    None. ValueError (one line) when the path is missing or not shaped like the params."""
    if not weights:
        return state
    node = state
    for key in weights.split("/"):
        if not (isinstance(node, dict) and key in node):
            keys = sorted(node) if isinstance(node, dict) else "-"
            raise ValueError(f"config.evals.*.weights={weights!r}: the train state has no "
                             f"{key!r} there (its keys: {keys})")
        node = node[key]
    if jax.tree.structure(node) != jax.tree.structure(state["params"]):
        raise ValueError(f"config.evals.*.weights={weights!r} is not shaped like the parameters "
                         "(it must be a copy of state['params'], e.g. an EMA)")
    return {**state, "params": node}


def _due_at(config, step: int, last: int) -> bool:
    """Whether a periodic evaluation (other than one the final evaluation repeats) is due."""
    return any(ev.get("every_steps", 0) and step % ev.get("every_steps", 0) == 0
               and not (step == last and _same_at_end(ev, step))
               for ev in (config.get("evals") or {}).values())


def _means(host: list[dict]) -> dict[str, float]:
    """Per-metric means over the logged interval; a part's metrics (`<part>/...`, with a
    `<part>/updated` flag) over the steps where that part updated (NaN if none did)."""
    out = {}
    for k in host[0]:
        part = k.split("/", 1)[0] if "/" in k else None
        flag = f"{part}/updated" if part else None
        if flag in host[0] and k != flag:
            vals = [h[k] for h in host if h[flag] > 0]
            out[k] = float(np.mean(vals)) if vals else float("nan")
        else:
            out[k] = float(np.mean([h[k] for h in host]))
    return out


def _postfix(means: dict[str, float]) -> dict[str, str]:
    keys = ["loss"] if "loss" in means else [k for k in means if k.endswith("/loss")]
    return {k.replace("/loss", ""): f"{means[k]:.3f}" for k in keys}


def _check_finite(config, state, last_saved: int | None) -> None:
    bad = int(jax.device_get(state["nonfinite_step"]))
    if bad >= 0:
        where = f"step {last_saved}" if last_saved is not None else "none saved yet"
        opt = config.optimizer
        clip = opt.get("grad_clip_norm")
        advice = (f"lower config.optimizer.learning_rate (now {opt.get('learning_rate')}) "
                  + (f"or config.optimizer.grad_clip_norm (now {clip})" if clip else
                     "or set config.optimizer.grad_clip_norm (e.g. 1.0)"))
        raise NonFiniteLossError(
            f"non-finite loss at step {bad}: stopped; the last good checkpoint is {where}; "
            f"{advice}, and rerun in a new --workdir (or in this one with "
            "--allow_config_change: it resumes from that checkpoint)")


def _preempted(step: int, workdir: str, saved: bool) -> dict[str, float]:
    signum = preemption.requested() or 15
    name = preemption.describe(signum)
    where = (f"checkpoint saved at step {step}" if saved else "no checkpoint needed")
    log.warning("preempted by %s at step %d", name, step)
    if jax.process_index() == 0:
        print(f"preempted ({name}): {where} in {workdir}; rerun the same command to resume",
              file=sys.stderr, flush=True)
    return {"preempted": 1.0, "step": float(step), "signal": float(signum)}


def _start(config, b: Build, restored, is_main: bool):
    """(state, step): the restored checkpoint (its data position set on the pipeline), or a
    fresh state, loaded from `config.init_from` when set."""
    if restored is not None:
        step, state, data_state = restored
        b.pipeline.set_state(data_state)
        return state, step
    init_from = config.get("init_from")
    if init_from:  # mapping and shapes against the source, before anything compiles
        init_lib.check(init_from, b.abstract_state, model_name=config.model.name)
    state = jax.jit(b.init_fn, out_shardings=b.state_sharding)(b.init_key)
    if init_from:
        state = _initialize_from(config, b, state, is_main)
    return state, 0


class _TrainLog:
    """The step metrics of each `log_every` interval: their means (`_means`) and the
    training rate, written to the metric writer and the progress bar."""

    def __init__(self, writer, bar, log_every: int, total: int, step: int):
        self.writer, self.bar, self.log_every, self.total = writer, bar, log_every, total
        self.pending: list[dict] = []
        self.t_last, self.step_last = time.perf_counter(), step

    def add(self, step: int, m) -> bool:
        """Adds step `step`'s metrics; True when the interval was written (the host synced)."""
        self.pending.append(m)
        self.bar.update(1)
        if not (step % self.log_every == 0 or step == self.total):
            return False
        means = _means(jax.device_get(self.pending))
        now = time.perf_counter()
        means["steps_per_sec"] = (step - self.step_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.step_last, self.pending = now, step, []
        self.writer.write(step, means)
        self.bar.set_postfix(_postfix(means))
        return True

    @contextlib.contextmanager
    def paused(self):
        """Time inside does not count towards steps_per_sec (evaluations)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.t_last += time.perf_counter() - t


def _initialize_from(config, b: Build, state, is_main: bool):
    """The fresh state with `config.init_from`'s weights loaded (ssl_gen.train.init); the
    objective's `extra` is recomputed from them (a momentum copy of the loaded weights)."""
    state, report = init_lib.initialize_from(config.init_from, state,
                                             model_name=config.model.name)
    if b.objective.init_extra is not None:
        state["extra"] = jax.jit(b.objective.init_extra,
                                 out_shardings=b.state_sharding["extra"])(state["params"])
    if is_main:
        print(report, file=sys.stderr, flush=True)
    return state


def _compare_run(workdir: str, config, allow_config_change: bool
                 ) -> tuple[dict | None, dict]:
    """Compares the workdir's run with `config` (before anything is built or restored).

    Returns (the stored final metrics when the run finished already under the same config,
    up to `workdir.HARMLESS` settings, so nothing is repeated, else None; the changes to
    record). Raises a one-line ConfigError for a changed config unless
    `allow_config_change`. A workdir without checkpoints or final metrics holds no run; one
    with checkpoints but no stored config holds a run of unknown config (copied checkpoints,
    or a killed run's last save landing in a recreated workdir): a one-line ConfigError too.
    """
    ckpt_dir = os.path.join(workdir, "checkpoints")
    has_run = os.path.isdir(ckpt_dir) and any(n.isdigit() for n in os.listdir(ckpt_dir))
    if has_run and not allow_config_change and workdir_lib.stored_config(workdir) is None:
        raise ConfigError(
            f"--workdir={workdir} holds checkpoints but no {workdir_lib.CONFIG_FILE}, so which "
            "config trained them is unknown: use a new --workdir, or pass "
            "--allow_config_change to resume them under this config")
    done = workdir_lib.finished(workdir)
    changes = workdir_lib.config_changes(workdir, config) if (has_run or done) else {}
    if not allow_config_change:
        workdir_lib.require_same(workdir, changes)
    real = [k for k in changes if not workdir_lib.is_harmless(k)]
    return (done if done is not None and not real else None), changes


def train_and_evaluate(config, workdir: str, *,
                       allow_config_change: bool = False) -> dict[str, float]:
    """Trains and evaluates the configured model; resumes from `workdir` if it holds a run.

    Returns the final metrics (also written to `workdir/final_metrics.json`). A workdir
    holding a run of a different config is a one-line `ConfigError` before anything is
    restored, unless `allow_config_change` (the change is recorded in
    `config_history.jsonl`); a finished run of the same config returns its final metrics
    without repeating anything. If SIGTERM or Ctrl-C (or a multi-host preemption notice)
    arrives, training or evaluation stops within a step or an eval batch, a checkpoint is
    saved and `{"preempted": 1.0, "step": N, "signal": S}` is returned; the next call
    resumes from it.
    """
    config_check.validate(config)
    is_main = jax.process_index() == 0
    workdir_lib.prepare(workdir)
    done, changes = _compare_run(workdir, config, allow_config_change)
    if done is not None:
        if is_main:
            print(f"finished already in {workdir} (step {int(done.get('step', 0))}): nothing "
                  "to do; use a new --workdir to train again", file=sys.stderr, flush=True)
        return dict(done, finished_already=1.0)
    b = build(config, workdir)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                   save_every_steps=config.checkpoint_every_steps,
                                   keep=config.keep_checkpoints)
    try:
        restored = ckpt.restore_latest(b.abstract_state)
    except BaseException:
        ckpt.close()
        raise
    state, step = _start(config, b, restored, is_main)
    last_saved = None if restored is None else step
    if restored is not None:
        log.info("resumed from step %d in %s", step, workdir)
    old_final = workdir_lib.finished(workdir)
    if is_main:
        workdir_lib.record(workdir, config, changes, step)
        if old_final is not None:  # training goes on past it (a recorded config change)
            os.replace(os.path.join(workdir, workdir_lib.FINAL_FILE),
                       os.path.join(workdir, f"final_metrics_step{int(old_final['step'])}.json"))

    train_step = TrainStep(b.objective, b.txs, state_sharding=b.state_sharding,
                           batch_sharding=b.batch_sharding, replicated=b.repl)
    writer = metrics.MetricWriter(workdir, resume_step=step)
    total = config.num_train_steps
    bar = tqdm(total=total, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not (is_main and config.get("progress_bar", True)))
    train_log = _TrainLog(writer, bar, config.log_every_steps, total, step)
    multihost = jax.process_count() > 1
    # XLA's CPU runtime deadlocks when a multi-device step with an all-reduce is still
    # waiting for some of its per-device launches while the next step's launches, queued by
    # async dispatch, fill the dispatch pool and wait for its outputs (seen as "Termination
    # timeout for all reduce ... Expected 8 threads" with 8 fake devices on 2 cores). On CPU
    # the step therefore completes before the next is dispatched; accelerators keep async
    # dispatch (no host thread pool runs their collectives).
    sync_each_step = jax.default_backend() == "cpu" and b.mesh.devices.size > 1
    data_state = b.pipeline.get_state()
    batches = data.DevicePrefetcher(b.pipeline, b.batch_sharding, config.get("prefetch", 2))
    # Read once: ConfigDict lookups cost microseconds, and a step may cost ~1 ms.
    periods = [p for p in _eval_periods(config) if p]
    try:
        with preemption.guard(enabled=not multihost):
            # A run stopped during the evaluations of its checkpoint step evaluates it first.
            if step and _due_at(config, step, total) and not writer.logged(step, "eval"):
                try:
                    _evaluate(config, b, state, step, workdir, writer, final=False,
                              last=total)
                except EvalInterrupted:
                    return _preempted(step, workdir, saved=False)
            while step < total:
                batch, data_state = next(batches)
                state, m = train_step(state, batch, b.train_key)
                if sync_each_step:
                    jax.block_until_ready(m)
                step += 1
                # log
                if train_log.add(step, m):
                    _check_finite(config, state, last_saved)
                # evaluate
                if any(step % p == 0 for p in periods) and not _stop_requested():
                    with train_log.paused():  # steps_per_sec: training only
                        try:
                            _evaluate(config, b, state, step, workdir, writer,
                                      final=False, last=total)
                        except EvalInterrupted:
                            pass  # saved below; the resumed run evaluates this step again
                # save
                stop = _stop_requested() or (multihost and ckpt.reached_preemption(step))
                if ckpt.should_save(step) or stop:
                    _check_finite(config, state, last_saved)
                    ckpt.save(step, state, data_state)
                    last_saved = step
                if stop:
                    return _preempted(step, workdir, saved=True)
            _check_finite(config, state, last_saved)
            ckpt.save(step, state, data_state)  # async: overlaps the final evals
            bar.close()
            try:
                final = _evaluate(config, b, state, step, workdir, writer,
                                  final=True)
            except EvalInterrupted:
                return _preempted(step, workdir, saved=True)
    finally:
        batches.close()
        bar.close()
        ckpt.close()
        writer.close()

    final["step"] = float(step)
    final["num_traces"] = float(train_step.num_traces)
    if is_main:
        tmp = os.path.join(workdir, workdir_lib.FINAL_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(final, f, indent=2)
        os.replace(tmp, os.path.join(workdir, workdir_lib.FINAL_FILE))
        metrics.plot_curves(workdir)
    return final
