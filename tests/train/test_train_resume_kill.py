"""kill -9 in the middle of training, restart the same command: the final weights equal an
uninterrupted run's, bit for bit (CPU, one thread)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_script import SlowBatches, assert_same_run, config, synthetic_acts  # noqa: E402

SCRIPT = Path(__file__).with_name("train_script.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))


def _run(out: Path) -> None:
    """The same run as train_script.py, in this process (one thread, like the subprocess)."""
    from mmsae.train import train

    train(config(40), SlowBatches(synthetic_acts(), 64, seed=1), out)


def _checkpoint_step(out: Path) -> int:
    path = out / "checkpoint.pt"
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=False)["step"])


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    _run(tmp_path / "ref")

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--sleep", "0.05"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while _checkpoint_step(out) < 10:
            assert proc.poll() is None, "run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_step(out)
    assert 10 <= killed_at < 40 and not (out / "sae").exists()

    _run(out)
    assert_same_run(tmp_path / "ref", out)
