"""kill -9 in the middle of training, restart the same command: the final weights equal an
uninterrupted run's, bit for bit (CPU, one thread)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_helper import sigkill_once  # noqa: E402
from train_script import SlowBatches, assert_same_run, config, synthetic_acts  # noqa: E402

SCRIPT = Path(__file__).with_name("train_script.py")


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
    sigkill_once([str(SCRIPT), str(out), "--sleep", "0.05"], lambda: _checkpoint_step(out) >= 10, timeout_s=120)
    killed_at = _checkpoint_step(out)
    assert 10 <= killed_at < 40 and not (out / "sae").exists()

    _run(out)
    assert_same_run(tmp_path / "ref", out)
