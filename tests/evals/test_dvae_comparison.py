"""The estimator comparison: a tiny sweep (2 estimators, 4 steps) writes report.md with all
its columns, the per-estimator gradient table and both plots; a finished sweep re-renders
without retraining; each run's trainer config is valid, shares the sweep's objective kwargs
and tracks its own estimator or (track="all") every estimator of the sweep."""

import json
import os

import pytest

from ssl_gen.reports import dvae_report
from ssl_gen.runners import dvae_comparison as compare
from ssl_gen.train import config_check
from tests.train.conftest import load_config

CONFIG = "experiments/dvae_estimators.py"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep_config(tmp_path_factory):
    d = os.environ.get("TFDS_DATA_DIR") or str(tmp_path_factory.mktemp("tfds"))
    os.environ.setdefault("TFDS_DATA_DIR", d)
    c = load_config(CONFIG, "categorical,sweep,runlocal")
    c.dataset.data_dir = d
    c.estimators = "rloo,straight_through"
    c.num_train_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 4
    c.evals.gradient_variance.every_steps = 2
    return c


def test_run_configs_are_trainer_configs(sweep_config):
    c = compare.run_config(sweep_config, "gumbel_softmax", 3)
    config_check.validate(c)  # no sweep key left
    assert c.seed == 3 and c.objective.kwargs.estimator.name == "gumbel_softmax"
    assert list(c.evals.gradient_variance.kwargs.estimators) == ["gumbel_softmax"]
    assert c.objective.kwargs.kl_warmup_steps == sweep_config.objective.kwargs.kl_warmup_steps
    assert "temperature_schedule" in c.objective.kwargs  # the preset's, merged in
    rloo = compare.run_config(sweep_config, "rloo", 0, ["rloo", "straight_through"])
    assert "temperature_schedule" not in rloo.objective.kwargs  # no leftover of another preset
    assert list(rloo.evals.gradient_variance.kwargs.estimators) == ["rloo", "straight_through"]
    with pytest.raises(compare.SweepError, match="'disarm' is not one of"):
        compare.run_config(sweep_config, "disarm", 0)  # Bernoulli only


@pytest.mark.slow  # trains and compiles the tracked estimators
def test_tiny_sweep_writes_the_report(sweep_config, tmp_path, capsys):
    report = compare.run(sweep_config, str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert dvae_report.FAIRNESS in text
    header = report.table.splitlines()[0]
    for _, h in dvae_report.COLUMNS:
        assert h in header, h
    lines = report.table.splitlines()[2:]
    assert [ln.split("|")[1].strip() for ln in lines] == ["rloo", "straight_through"]
    for line in lines:  # every cell filled: no "-" for a missing metric
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert "-" not in cells and cells[2] == "2" and cells[-1] == "4", line
    for s in report.summaries:
        assert s["grad"]["log_variance"] == s["mean_log_variance"]
        assert s["test_nll"] <= -s["test_elbo"] + 1e-3  # L_k >= ELBO (same model)
        assert len(s["curves"]["log-variance of the encoder gradient"]) >= 2
    assert "| estimator | log_variance | bias | bias_floor | snr | cosine |" in text
    for path in report.plots:
        with open(path, "rb") as fh:
            assert fh.read(8) == PNG, path
    # track="all": both estimators measured on both trajectories, a row per trajectory.
    assert len(report.plots) == 3
    cross = report.trajectory_table.splitlines()
    assert cross[0] == "| trajectory / measured | rloo | straight_through |"
    assert [ln.split("|")[1].strip() for ln in cross[2:]] == ["rloo", "straight_through"]
    for line in cross[2:]:  # every cell measured: a number, never "-"
        assert all(c.strip() != "-" for c in line.strip("|").split("|")), line
    for s in report.summaries:  # the diagonal is the run's own estimator
        own = s["along"][s["estimator"]]
        assert set(own) == set(s["curves"]["log-variance of the encoder gradient"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["estimator"] for s in summary] == ["rloo", "straight_through"]

    mtime = os.path.getmtime(tmp_path / "rloo_s0" / "final_metrics.json")
    again = compare.run(sweep_config, str(tmp_path), verbose=True)  # re-rendered, not retrained
    assert os.path.getmtime(tmp_path / "rloo_s0" / "final_metrics.json") == mtime
    assert again.table == report.table
    said = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert len(said) == 2 and said[0].startswith("[1/2] rloo, seed 0: finished already")


def test_a_preempted_run_stops_the_sweep(sweep_config, tmp_path, monkeypatch):
    """SIGTERM ends the run it hits with a checkpoint; the sweep must stop there (not train
    the next estimator in a process asked to exit) and say how to resume."""
    calls = []
    monkeypatch.setattr(compare.trainer, "train_and_evaluate",
                        lambda c, d, **kw: calls.append(d) or {"preempted": 1.0, "step": 2.0})
    assert compare.run(sweep_config, str(tmp_path)) is None
    assert len(calls) == 1 and not (tmp_path / "report.md").exists()


def test_bad_sweep_keys_are_one_line(sweep_config, tmp_path):
    c = load_config(CONFIG, "runlocal")
    with pytest.raises(compare.SweepError, match="add `,sweep`"):
        compare.run(c, str(tmp_path))
    bad = load_config(CONFIG, "sweep,runlocal")
    bad.seeds = "0,x"
    with pytest.raises(compare.SweepError, match="config.seeds"):
        compare.run(bad, str(tmp_path))
    bad = load_config(CONFIG, "sweep,runlocal")
    bad.track = "mine"
    with pytest.raises(compare.SweepError, match="config.track='mine'"):
        compare.run(bad, str(tmp_path))


def test_trajectory_table_needs_runs_that_measured_several_estimators():
    own = [{"estimator": e, "along": {e: {100: -5.0, 200: -6.0}}} for e in ("a", "b")]
    assert dvae_report.trajectory_table(own) == ""  # track="own": only a diagonal
    assert dvae_report.plot_trajectories(own, "unused.png") is None
    both = [{"estimator": e, "along": {"b": {100: -1.0}, "a": {100: -2.0, 200: -4.0}}}
            for e in ("a", "b")]
    lines = dvae_report.trajectory_table(both).splitlines()
    assert lines[0] == "| trajectory / measured | a | b |"  # sweep order, not sorted input
    assert lines[2] == "| a | -3.00 | -1.00 |"


@pytest.mark.slow  # trains and compiles the tracked estimators
def test_track_every_measures_every_preset_with_its_cost(sweep_config, tmp_path):
    """The main job's table: every preset of the latent space measured on the trained run's
    trajectory, with its f evaluations per estimate (the objective's own count: 2 for the
    two-sample presets, REBAR 4 and RELAX 7 per sample, IndeCateR N C + 1 = 13 and exact
    enumeration C^N = 64 at runlocal's 3 x 4 latents)."""
    c = sweep_config.copy_and_resolve_references()
    c.estimators, c.track = "rloo", "every"
    c.evals.gradient_variance.every_steps = 2  # steps 2 and 4: the second is timed
    report = compare.run(c, str(tmp_path))
    rows = {ln.split("|")[1].strip(): [x.strip() for x in ln.strip("|").split("|")]
            for ln in report.every_table.splitlines()[2:]}
    assert set(rows) == set(c.presets)
    fevals = {name: row[1] for name, row in rows.items()}
    assert fevals == {**{n: "2" for n in c.presets}, "rebar": "4", "relax": "7",
                      "indecater": "13", "exact": "64"}
    for name, row in rows.items():
        assert row[2] != "-", name  # ms / estimate: measured on the second evaluation
        assert row[-1] == "1"  # one trajectory
    assert rows["exact"][6] == "-" and float(rows["exact"][4]) == 0  # exact: no bias
    assert "## Every estimator, measured at the same parameters" in report.text


def test_track_can_name_presets(sweep_config, tmp_path):
    c = sweep_config.copy_and_resolve_references()
    c.estimators, c.track = "rloo", "rloo,reinmax"
    configs = compare.run_config(c, "rloo", 0, ["rloo", "reinmax"])
    assert set(configs.evals.gradient_variance.kwargs.estimators) == {"rloo", "reinmax"}
    c.track = "rloo,nope"
    with pytest.raises(compare.SweepError, match="'nope' is not one of"):
        compare.run(c, str(tmp_path))
