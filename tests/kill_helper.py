"""kill -9 for the resume tests: start a job in a child process, SIGKILL it once it has saved resumable
state, and check that it really died of the signal (not of an error, not by finishing first).

Import with `sys.path.insert(0, <tests dir>)`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def child_env() -> dict[str, str]:
    """One thread (so the child's work is deterministic and slow enough to catch) and this checkout's src."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC))


def sigkill_once(args: list[str], ready: Callable[[], bool], timeout_s: float = 300.0) -> None:
    """Run `python *args`, poll `ready()` until the job has saved state, then SIGKILL it."""
    proc = subprocess.Popen([sys.executable, *args], env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout_s
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
            assert time.time() < deadline, "no resumable state appeared in time"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
