"""The zoo's training recipe at toy scale: it runs, is seeded, and resumes after kill -9."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmsae.zoo.train import ZooTrainConfig, train_zoo

TOY = ZooTrainConfig(tower_images=256, tower_steps=6, subject_images=128, subject_steps=4, explainer_pool=6,
                     explainer_steps=3, clip_steps=3, batch=8)
SCRIPT = (
    "from pathlib import Path\n"
    "from mmsae.zoo.train import train_zoo, ZooTrainConfig\n"
    f"train_zoo(Path(OUT), ZooTrainConfig(**{TOY.__dict__!r}))\n"
)


def _weights(root: Path, name: str) -> dict:
    files = sorted((root / name).glob("model*.safetensors"))  # one file, or shards under 10 MB
    assert files, f"no weights in {root / name}"
    return {k: v for f in files for k, v in load_file(f).items()}


@pytest.mark.slow
def test_toy_zoo_trains_and_resumes_identically_after_kill(tmp_path):
    ref = tmp_path / "ref"
    train_zoo(ref, TOY)
    for name in ("subject", "explainer", "clip", "tower-subject", "tower-explainer"):
        assert _weights(ref, name)
        assert all(f.stat().st_size < 15_000_000 for f in (ref / name).glob("*.safetensors"))
        assert (ref / name / "training_log.json").exists()

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", f"OUT = {str(run)!r}\n" + SCRIPT], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "tower-subject").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run / "tower-subject").exists(), "first stage never finished"
    assert not (run / "subject").exists()
    train_zoo(run, TOY)  # resume: finished stages are kept, the rest is trained
    for name in ("tower-subject", "subject", "explainer", "clip"):
        a, b = _weights(ref, name), _weights(run, name)
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] == b[k]).all(), f"{name}:{k} differs after resume"
    assert not list(run.glob("*.tmp"))
