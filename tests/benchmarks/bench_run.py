"""Run a benchmark script the way its docstring says, tiny and single-threaded, and read its flat JSON keys."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str) -> str:
    """The script's standard output (it must exit 0)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def run_benchmark(script: str, *args: str) -> dict:
    return json.loads(run_script(script, *args, "--json"))
