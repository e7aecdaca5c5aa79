"""benchmarks/harvest.py: the rendering bound next to the ratio it bounds."""

import pytest
from bench_run import run_benchmark


def test_harvest_reports_the_rendering_bound():
    out = run_benchmark("harvest.py", "--n", "16", "--batch", "8", "--workers", "0")
    models = ("zoo-subject", "tiny-llava-next")
    for model in models:
        r = {k.removeprefix(f"harvest.{model}."): v for k, v in out.items() if k.startswith(f"harvest.{model}.")}
        assert r["data_ms_per_record"] == pytest.approx(r["render_ms_per_record"] + r["processor_ms_per_record"])
        capture = r["processor_ms_per_record"] + r["forward_ms_per_record"]
        assert r["bound_ratio"] == pytest.approx(capture / (capture + r["render_ms_per_record"]))
        assert 0 < r["bound_ratio"] < 1
    assert out["harvest.bound_ratio"] == min(out[f"harvest.{m}.bound_ratio"] for m in models)
    assert "harvest.ratio_to_capture" in out
