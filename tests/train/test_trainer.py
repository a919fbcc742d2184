"""The training loop: compiled once, device-count invariant, fails fast and clearly."""

import json
import os

import jax
import numpy as np
import pytest

from ssl_gen.train import trainer
from ssl_gen.train.checkpoint import Checkpointer


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return np.array([r["loss"] for r in rows if r["split"] == "train"])


def test_step_traces_once_and_writes_outputs(tiny_config, tmp_path):
    tiny_config.evals = {"iwae": dict(every_steps=3, kwargs=dict(num_samples=2, chunk_size=2)),
                         "images": dict(every_steps=0)}
    final = trainer.train_and_evaluate(tiny_config, str(tmp_path))
    # 6 steps with logging every 2, an eval every 3 and checkpoints every 3: still 1 trace.
    assert final["num_traces"] == 1
    assert len(_losses(tmp_path)) == 3
    for f in ("final_metrics.json", "config.json", "plots/curves.png",
              "plots/samples_latest.png", "plots/reconstructions_latest.png"):
        assert os.path.exists(tmp_path / f), f
    assert os.listdir(tmp_path / "tensorboard")
    assert Checkpointer(str(tmp_path / "checkpoints"), save_every_steps=3).all_steps() == [3, 6]


def test_an_eval_due_at_the_last_step_runs_once(tiny_config, tmp_path, monkeypatch):
    """An eval the final evaluation repeats unchanged runs once at the last step and is
    logged in both splits; one with final_kwargs runs twice (different calls)."""
    from ssl_gen.evals import iwae

    calls = []
    real = iwae.evaluate
    monkeypatch.setattr(iwae, "evaluate", lambda p, ctx, **kw: calls.append(
        (ctx.step, kw["num_samples"])) or real(p, ctx, **kw))
    tiny_config.evals = {"iwae": dict(every_steps=3, kwargs=dict(num_samples=2, chunk_size=2))}
    trainer.train_and_evaluate(tiny_config, str(tmp_path / "same"))
    assert calls == [(3, 2), (6, 2)]
    with open(tmp_path / "same" / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    at_end = {r["split"]: r["nll_iwae2"] for r in rows if r["step"] == 6 and "nll_iwae2" in r}
    assert set(at_end) == {"eval", "final"} and at_end["eval"] == at_end["final"]
    calls.clear()
    tiny_config.evals.iwae.final_kwargs = dict(num_samples=4, chunk_size=4)
    trainer.train_and_evaluate(tiny_config, str(tmp_path / "other"))
    assert calls == [(3, 2), (6, 2), (6, 4)]


def test_steps_per_sec_leaves_evaluations_out(tiny_config, tmp_path, monkeypatch):
    """An eval that takes 100 s (of a fake clock) every 2 steps would cap a timer that
    counted it at 0.02 steps/s; the logged rate is training alone (the comparison's time /
    step column reads it). The trainer's clock is replaced, so no wall time is asserted."""
    import types

    from ssl_gen.evals import iwae

    now = [0.0]

    def perf_counter():  # every reading advances 1 ms: training intervals have a duration
        now[0] += 1e-3
        return now[0]

    def slow_eval(p, ctx, **kw):
        now[0] += 100.0
        return {}

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=perf_counter))
    monkeypatch.setattr(iwae, "evaluate", slow_eval)
    tiny_config.evals = {"iwae": dict(every_steps=2, kwargs=dict(num_samples=2, chunk_size=2))}
    tiny_config.num_train_steps = 8
    tiny_config.checkpoint_every_steps = 1000  # saves block too: keep them out of this check
    trainer.train_and_evaluate(tiny_config, str(tmp_path))
    with open(tmp_path / "metrics.jsonl") as f:
        rates = [r["steps_per_sec"] for r in map(json.loads, f) if r["split"] == "train"]
    assert len(rates) == 4 and min(rates) > 1, rates  # counted, the evals make it < 0.03


def test_eight_devices_match_one_device(tiny_config, tmp_path):
    # Same global batch, same keys: only the all-reduce order differs, so the curves agree
    # to float32 rounding compounded over 6 Adam steps; 1e-4 relative is ~100x that noise
    # and far below the ~1% step-to-step change of the loss.
    curves = {}
    for n in (1, 8):
        tiny_config.num_devices = n
        trainer.train_and_evaluate(tiny_config, str(tmp_path / f"d{n}"))
        curves[n] = _losses(tmp_path / f"d{n}")
    np.testing.assert_allclose(curves[8], curves[1], rtol=1e-4)
    assert not np.allclose(curves[1][0], curves[1][-1], rtol=1e-3)  # it did train


def test_resume_in_process_continues_where_it_stopped(tiny_config, tmp_path):
    # A finished run resumed with the same config does no more steps and keeps its result.
    first = trainer.train_and_evaluate(tiny_config, str(tmp_path))
    rows = (tmp_path / "metrics.jsonl").read_text()
    again = trainer.train_and_evaluate(tiny_config, str(tmp_path))
    assert again.pop("finished_already") == 1.0
    assert again == first  # the stored final metrics: no final evaluation is repeated
    assert (tmp_path / "metrics.jsonl").read_text() == rows  # no second `final` row


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
    # SGD with an absurd learning rate overflows the parameters within a few steps.
    tiny_config.optimizer.update(name="sgd", learning_rate=1e12, schedule="constant",
                                 grad_clip_norm=None, momentum=0.0)
    tiny_config.num_train_steps = 40
    tiny_config.checkpoint_every_steps = 1
    tiny_config.log_every_steps = 1
    with pytest.raises(trainer.NonFiniteLossError, match=r"non-finite loss at step \d+") as e:
        trainer.train_and_evaluate(tiny_config, str(tmp_path))
    assert "\n" not in str(e.value)
    b = trainer.build(tiny_config, str(tmp_path))
    restored = Checkpointer(str(tmp_path / "checkpoints"), save_every_steps=1).restore_latest(
        b.abstract_state)
    assert restored is not None
    leaves = jax.tree.leaves(restored[1]["params"])
    assert all(np.isfinite(np.asarray(x)).all() for x in leaves)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(num_train_step=5), "unknown key 'num_train_step'; did you mean"),
    (lambda c: c.update(batch_size=-1), "config.batch_size=-1 must be an int >= 1"),
    (lambda c: c.update(batch_size=12), "must be a positive multiple of the 8 devices"),
    (lambda c: c.model.update(name="nope"), "no module ssl_gen.models.nope"),
    (lambda c: c.model.kwargs.update(latnt_dim=3), "config.model.kwargs: unknown key"),
    (lambda c: c.objective.kwargs.update(estimator="nope"), "unknown estimator 'nope'"),
    (lambda c: c.objective.kwargs.update(num_sample=2), "config.objective.kwargs: unknown"),
    (lambda c: c.optimizer.update(name="adagrad"), "config.optimizer.name='adagrad'"),
    (lambda c: c.optimizer.update(learning_rate=0.0), "learning_rate=0.0 must be a number > 0"),
    (lambda c: c.model.kwargs.update(image_shape=(28, 28, 1)), "do not fit dataset 'digits'"),
    (lambda c: c.model.kwargs.update(arch="conv", hidden=(4, 4, 4, 4)), "divisible"),
    (lambda c: c.dataset.update(name="no_such_dataset"), "no_such_dataset"),
    (lambda c: c.evals.update(bogus=dict(every_steps=1)), "no module ssl_gen.evals.bogus"),
])
def test_bad_config_is_one_line_error_before_compiling(tiny_config, tmp_path, mutate, message):
    mutate(tiny_config)
    with pytest.raises(ValueError, match=message) as e:
        trainer.train_and_evaluate(tiny_config, str(tmp_path))
    assert "\n" not in str(e.value).strip()
    assert not os.path.exists(tmp_path / "checkpoints")  # failed before any state existed


def test_two_evals_reporting_one_metric_is_an_error(tiny_config, tmp_path):
    """One row holds every eval's metrics, so a second eval writing the same name would
    overwrite the first silently (VQGAN's reconstruction and codebook evals both wrote `mse`)."""
    kw = dict(num_samples=2, chunk_size=2)
    tiny_config.evals = {"iwae": dict(every_steps=0, kwargs=kw),
                         "again": dict(module="iwae", every_steps=0, kwargs=kw)}
    with pytest.raises(ValueError,
                       match=r"config.evals.iwae and config.evals.again both report 'elbo'"):
        trainer.train_and_evaluate(tiny_config, str(tmp_path))
