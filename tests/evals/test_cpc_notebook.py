"""colab/cpc.ipynb runs headless at its small size (the MI bounds with the optimal critic on
correlated Gaussians, the trained critics' runner at `cpu,runlocal`, a tiny CPC pre-trained
a few steps on MNIST-1D with its probes) and writes its summary: InfoNCE below log N at
every true MI, NWJ within its spread of the truth at 2 nats, every probe with its
raw-signal and random-init baselines."""

import json
import math
import os

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow  # a kernel, the runner's tiny critics, a 20-step CPC run with its probes
def test_cpc_notebook_runs_headless(tmp_path, monkeypatch):
    if not os.environ.get("TFDS_DATA_DIR"):  # mnist1d builds in seconds
        monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    run_notebook("cpc.ipynb", tmp_path, monkeypatch, timeout=400)
    summary = json.loads((tmp_path / "cpc_notebook_summary.json").read_text())
    log_n = summary["log_n"]
    assert log_n == pytest.approx(math.log(64))
    optimal = {r["mi"]: r for r in summary["optimal"]}
    assert sorted(optimal) == [2.0, 6.0, 10.0]
    for r in optimal.values():
        assert r["infonce"][0] <= log_n  # InfoNCE never exceeds log N
    assert optimal[10.0]["infonce"][0] < 10.0 - 5.0  # so it is far below a 10-nat truth
    # NWJ at its optimal critic is unbiased: at 2 nats within 4 standard errors of 8 batches.
    nwj_mean, nwj_sd = optimal[2.0]["nwj"]
    assert abs(nwj_mean - 2.0) < 4 * nwj_sd / math.sqrt(8) + 0.05, optimal[2.0]["nwj"]
    assert summary["trained"]  # the runner's rows
    final = summary["cpc"]
    assert final["step"] == 20
    for key in ("fewshot1_acc", "knn10_acc", "linear_probe_acc"):
        for suffix in ("", "_pixels", "_random_init"):
            assert 0.0 <= final[key + suffix] <= 1.0, key + suffix
