"""A workdir holds one run: a changed config, a changed shape or a rerun never mixes two runs
up, duplicates a record or deletes anything (ssl_gen.train.workdir, checkpoint, metrics)."""

import json
import os

import pytest

from ssl_gen.train import checkpoint, trainer
from ssl_gen.train import workdir as workdir_lib
from ssl_gen.train.config_check import ConfigError


def _files(root):
    """Every file under `root` with its size: what a refused run must leave as it was."""
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            if "tensorboard" not in p:  # tensorboardX opens a new event file per writer
                out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def _rows(workdir, name="metrics.jsonl"):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture
def finished(tiny_config, tmp_path):
    """A finished tiny run (6 steps, checkpoints at 3 and 6) and its workdir."""
    workdir = str(tmp_path / "run")
    first = trainer.train_and_evaluate(tiny_config, workdir)
    return tiny_config, workdir, first


def test_a_changed_config_is_refused_in_one_line_and_nothing_changes(finished):
    config, workdir, _ = finished
    before = _files(workdir)
    config.optimizer.learning_rate = 0.05
    with pytest.raises(ConfigError) as e:
        trainer.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "\n" not in msg
    assert "optimizer.learning_rate: 0.001 -> 0.05" in msg
    assert "new --workdir" in msg and "--allow_config_change" in msg
    assert _files(workdir) == before  # config.json still says how the model was trained
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["optimizer"]["learning_rate"] == 0.001


def test_an_allowed_change_resumes_and_is_recorded(finished):
    config, workdir, _ = finished
    config.optimizer.learning_rate = 0.05
    config.num_train_steps = 8  # go on past the finished run
    final = trainer.train_and_evaluate(config, workdir, allow_config_change=True)
    assert final["step"] == 8
    (row,) = _rows(workdir, workdir_lib.HISTORY_FILE)
    assert row["resumed_at_step"] == 6
    assert row["changes"]["optimizer.learning_rate"] == {"old": 0.001, "new": 0.05}
    assert row["changes"]["num_train_steps"] == {"old": 6, "new": 8}
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["optimizer"]["learning_rate"] == 0.05
    # The first run's final metrics are kept beside the new ones, not overwritten.
    assert os.path.exists(os.path.join(workdir, "final_metrics_step6.json"))
    assert [r["step"] for r in _rows(workdir) if r["split"] == "final"] == [6, 8]


def test_checkpoints_without_a_stored_config_are_refused_in_one_line(finished):
    config, workdir, _ = finished
    os.remove(os.path.join(workdir, "config.json"))  # e.g. checkpoints copied in by hand
    os.remove(os.path.join(workdir, workdir_lib.FINAL_FILE))
    before = _files(workdir)
    with pytest.raises(ConfigError) as e:
        trainer.train_and_evaluate(config, workdir)
    msg = str(e.value)
    assert "\n" not in msg and "no config.json" in msg and "--allow_config_change" in msg
    assert _files(workdir) == before
    early = [r for r in _rows(workdir) if r["split"] == "train"]
    config.num_train_steps = 8  # allowed: resumes from the newest checkpoint (step 6)
    final = trainer.train_and_evaluate(config, workdir, allow_config_change=True)
    assert final["step"] == 8
    steps = [r["step"] for r in _rows(workdir) if r["split"] == "train"]
    assert steps[:len(early)] == [r["step"] for r in early] and min(steps[len(early):]) > 6
    assert os.path.exists(os.path.join(workdir, "config.json"))


def test_a_checkpoint_of_other_shapes_is_never_called_corrupt_or_moved(finished):
    config, workdir, _ = finished
    before = _files(workdir)
    config.model.kwargs.latent_dim = 8  # was 4: every array of the encoder head changes
    # Even with the change allowed, an intact checkpoint of other shapes is an error.
    with pytest.raises(checkpoint.CheckpointMismatchError) as e:
        trainer.train_and_evaluate(config, workdir, allow_config_change=True)
    msg = str(e.value)
    assert "\n" not in msg and "other shapes" in msg and "intact" in msg
    assert "['params']['decoder']['Dense_0']['kernel'] is (4, 32) in the checkpoint, (8, 32) " \
        "now" in msg
    assert not os.path.exists(os.path.join(workdir, "corrupt_checkpoints"))
    after = _files(workdir)
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")}
    assert after["metrics.jsonl"] == before["metrics.jsonl"]  # nothing appended


def test_harmless_changes_of_a_finished_run_repeat_nothing(finished):
    config, workdir, first = finished
    rows = _rows(workdir)
    config.log_every_steps = 1
    config.progress_bar = True
    again = trainer.train_and_evaluate(config, workdir)
    assert again.pop("finished_already") == 1.0 and again == first
    assert _rows(workdir) == rows  # no second final evaluation, no second `final` row


def test_a_resumed_run_writes_each_step_once_and_keeps_the_superseded_rows(tiny_config,
                                                                           tmp_path):
    workdir = str(tmp_path / "run")
    tiny_config.num_train_steps = 5  # checkpoint at 3 (and the final one at 5)
    tiny_config.log_every_steps = 1
    trainer.train_and_evaluate(tiny_config, workdir)
    # As after a kill between step 3's checkpoint and the end: steps 4, 5 were logged, the
    # checkpoint at 5 and the final metrics were not written.
    ckpt = os.path.join(workdir, "checkpoints")
    os.rename(os.path.join(ckpt, "5"), os.path.join(str(tmp_path), "kept_5"))
    os.remove(os.path.join(workdir, "final_metrics.json"))
    trainer.train_and_evaluate(tiny_config, workdir)
    rows = _rows(workdir)
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5]
    assert [r["step"] for r in rows if r["split"] == "final"] == [5]
    moved = _rows(workdir, "metrics_superseded.jsonl")
    assert sorted({(r["step"], r["split"]) for r in moved}) == [
        (4, "train"), (5, "final"), (5, "train")]


def test_a_cut_short_metrics_line_is_kept_aside_not_lost(tmp_path):
    from ssl_gen.train import metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 1.0}\n'
                    '{"step": 2, "split": "train", "loss": 0.9}\n{"step": 3, "spl')
    assert metrics.supersede_after(str(path), 1) == 2
    assert [r["step"] for r in metrics.read_metrics(str(path))] == [1]
    assert (tmp_path / "metrics_superseded.jsonl").read_text().splitlines()[-1] == (
        '{"step": 3, "spl')


def test_setting_aside_twice_keeps_both_copies(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    c = checkpoint.Checkpointer(str(ckpt_dir), save_every_steps=1, async_save=False)
    try:
        for n in range(2):
            (ckpt_dir / "7").mkdir()
            (ckpt_dir / "7" / "marker").write_text(str(n))
            c._set_aside(7)
    finally:
        c.close()
    aside = tmp_path / "corrupt_checkpoints"
    assert sorted(os.listdir(aside)) == ["7", "7.1"]
    assert (aside / "7" / "marker").read_text() == "0"
    assert (aside / "7.1" / "marker").read_text() == "1"


def test_a_workdir_that_is_a_file_is_one_line(tiny_config, tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        trainer.train_and_evaluate(tiny_config, str(path))
