"""A kill -9 of a harvest or index leaves no data-loader worker behind (they would hold their memory)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = """
import multiprocessing, sys, time
from mmsae.data import open_source
from mmsae.models import load_adapter
from mmsae.store.prefetch import prepared_batches
adapter = load_adapter(sys.argv[1])
batches = prepared_batches(adapter, open_source("world:n=256,seed=0"), [range(256)], 32, workers=1)
next(batches)
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its entry waits for a parent to reap it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_die_with_a_killed_parent(llava_dir):
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root / "src"), OMP_NUM_THREADS="1")
    workers: list[int] = []
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(llava_dir)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers and all(_alive(p) for p in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:  # its watchdog: 5 s
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers), f"workers {workers} outlived their killed parent"
    finally:
        proc.kill()
        for pid in workers:  # a failed run must not leave its orphans behind either
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
