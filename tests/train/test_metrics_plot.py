"""The curves PNG groups the tracker's per-estimator series into one panel per statistic."""

import json

from ssl_gen.train import metrics

PNG = b"\x89PNG\r\n\x1a\n"


def test_nested_metrics_share_a_panel_per_statistic(tmp_path):
    rows = [{"step": s, "split": "train", "loss": 1.0 / (s + 1)} for s in range(3)]
    for s in range(3):
        rows.append({"step": s, "split": "eval", "elbo": -s,
                     **{f"gradvar/{e}/{stat}": float(s + i)
                        for i, e in enumerate(("rloo", "gumbel_softmax"))
                        for stat in ("log_variance", "snr")}})
    rows.append({"step": 3, "split": "final", "elbo": -3.0})  # not a curve
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    series = {}
    for r in metrics.read_metrics(str(tmp_path / "metrics.jsonl")):
        for k, v in r.items():
            if k not in ("step", "split") and r["split"] != "final":
                series.setdefault(f"{r['split']}/{k}", {})[r["step"]] = v
    panels = metrics.group_panels(series)
    assert sorted(panels) == ["eval/elbo", "eval/gradvar/*/log_variance", "eval/gradvar/*/snr",
                              "train/loss"]
    assert sorted(panels["eval/gradvar/*/snr"]) == ["gumbel_softmax", "rloo"]
    assert panels["eval/gradvar/*/snr"]["gumbel_softmax"] == {0: 1.0, 1: 2.0, 2: 3.0}
    assert list(panels["train/loss"]) == [""]
    path = metrics.plot_curves(str(tmp_path))
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG
