"""benchmarks/harvest.py: the rendering bound next to the ratio it bounds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_harvest_reports_the_rendering_bound():
    out = _run("harvest.py", "--n", "16", "--batch", "8", "--workers", "0")
    models = ("zoo-subject", "tiny-llava-next")
    for model in models:
        r = {k.removeprefix(f"harvest.{model}."): v for k, v in out.items() if k.startswith(f"harvest.{model}.")}
        assert r["data_ms_per_record"] == pytest.approx(r["render_ms_per_record"] + r["processor_ms_per_record"])
        capture = r["processor_ms_per_record"] + r["forward_ms_per_record"]
        assert r["bound_ratio"] == pytest.approx(capture / (capture + r["render_ms_per_record"]))
        assert 0 < r["bound_ratio"] < 1
    assert out["harvest.bound_ratio"] == min(out[f"harvest.{m}.bound_ratio"] for m in models)
    assert "harvest.ratio_to_capture" in out
