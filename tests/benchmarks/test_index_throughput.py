"""benchmarks/index_throughput.py: the FLOP bound next to the ratio it bounds."""

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


def test_index_reports_the_flop_bound():
    out = _run("index_throughput.py", "--records", "16", "--latents", "512", "--batch-size", "8",
               "--chunk-records", "8", "--workers", "0", "--selection", "float32")
    forward, encode = out["index.flops_forward_per_token"], out["index.flops_encode_per_token"]
    assert encode == 2 * 128 * 512
    assert forward > 2 * 4 * 128 * 128 * 4  # at least the 4 language blocks' q, k, v, o projections
    assert out["index.bound_ratio"] == pytest.approx(forward / (forward + encode))
    assert out["index.ratio_to_bound"] == pytest.approx(out["index.ratio_to_capture"] / out["index.bound_ratio"])
    assert out["index.selection_dtype"] == "float32"
    assert out["index.ratio_to_capture"] > 0 and "index.peak_rss_mb.16" in out
