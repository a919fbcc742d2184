"""benchmarks/bench_vit.py without timing anything: XLA's FLOP count of the MAE step drops
with masking (the encoder sees fewer tokens), by about what the token count predicts, and
the lowered and compiled programs' counts agree."""

import pytest

from benchmarks import bench_vit as bench


@pytest.mark.slow
def test_mae_flops_drop_with_masking_and_both_counts_agree():
    lowered = bench.mae_flops("tiny", 8, batch=1, compiled=False)
    assert lowered["mae_0.75"] < lowered["vit"] < lowered["mae_0.0"]
    # The encoder blocks see 1 + 4 tokens instead of 1 + 16; the decoder always sees 17.
    assert 0.4 < lowered["mae_0.75"] / lowered["mae_0.0"] < 0.8
    compiled = bench.mae_flops("tiny", 8, batch=1, compiled=True)
    for k, v in lowered.items():
        assert compiled[k] == pytest.approx(v, rel=0.1), k
