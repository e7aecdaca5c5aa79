"""benchmarks/harvest.py: the rendering bound next to the ratio it bounds."""

import pytest
from bench_run import run_benchmark


def test_harvest_reports_the_rendering_bound():
    out = run_benchmark("harvest.py", "--n", "16", "--batch", "8", "--workers", "0", "--repeats", "2")
    models = ("zoo-subject", "tiny-llava-next")
    for model in models:
        r = {k.removeprefix(f"harvest.{model}."): v for k, v in out.items() if k.startswith(f"harvest.{model}.")}
        assert r["data_ms_per_record"] == pytest.approx(r["render_ms_per_record"] + r["processor_ms_per_record"])
        capture = r["processor_ms_per_record"] + r["forward_ms_per_record"]
        assert r["bound_ratio"] == pytest.approx(capture / (capture + r["render_ms_per_record"]))
        assert 0 < r["bound_ratio"] < 1
        # best of the alternating runs, each side
        assert len(r["capture_tok_s_runs"]) == len(r["harvest_tok_s_runs"]) == 2
        assert r["capture_tok_s"] == max(r["capture_tok_s_runs"])
        assert r["harvest_tok_s"] == pytest.approx(max(r["harvest_tok_s_runs"]))
        assert r["ratio_to_capture"] == pytest.approx(r["harvest_tok_s"] / r["capture_tok_s"])
    assert out["harvest.bound_ratio"] == min(out[f"harvest.{m}.bound_ratio"] for m in models)
    assert "harvest.ratio_to_capture" in out
