"""The estimator toy runner: each toy's runlocal writes a report with every column, JSON rows
and PNG plots; unbiased estimators' measured bias sits within the noise of the closed-form
(or enumerated) truth, which checks the toys' closed forms too."""

import json

import pytest

from ssl_gen.evals import estimator_report, run_estimator_toys
from tests.train.conftest import load_config

CONFIG = "experiments/estimator_toys.py"
HEADERS = [header for _, header in estimator_report.COLUMNS]


@pytest.mark.parametrize("toy", ["gaussian", "bernoulli", "categorical"])
def test_runlocal_writes_the_report(toy, tmp_path):
    config = load_config(CONFIG, f"{toy},runlocal")
    assert config.runner == run_estimator_toys.RUNNER and config.toy == toy
    out = run_estimator_toys.run(config, str(tmp_path))

    report = (tmp_path / "report.md").read_text()
    assert all(f"## {title}" in report for title in out.tables)
    full = [t for t in out.tables.values() if "| f evals |" in t]  # the per-estimator tables
    assert full, "no table with the full columns"
    for table in full:
        header = table.splitlines()[0]
        assert all(f" {h} |" in header for h in HEADERS), header
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert set(rows) == set(out.rows) and all(rows.values())
    for path in out.plots:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", path

    for section in out.rows.values():
        for row in section:
            if row.get("unbiased") and "bias" in row:
                # 5 noise floors (the floor is the sd of the bias norm's noise, roughly);
                # 1e-6 for float32 rounding of zero-variance estimates.
                assert row["bias"] < 5 * row["bias_floor"] + 1e-6, (toy, row["name"], row)
