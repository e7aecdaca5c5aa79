"""`mmsae train` (generated from train.run.TrainJob) and `mmsae eval-sae` end to end on an activation file."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from click.testing import CliRunner

from mmsae.cli import command

sys.path.insert(0, str(Path(__file__).parent))
from train_script import synthetic_acts  # noqa: E402


def _app():
    return command()


def test_train_then_eval_from_a_safetensors_file(tmp_path):
    acts = synthetic_acts()
    save_file({"acts": acts}, str(tmp_path / "acts.safetensors"))
    runner = CliRunner()
    res = runner.invoke(_app(), ["train", "--store", str(tmp_path / "acts.safetensors"), "--out", str(tmp_path / "run"),
                                 "--k", "4", "--n-latents", "64", "--steps", "30", "--batch-size", "64", "--warmup-steps", "5",
                                 "--lr", "0.003", "--log-every", "5"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["steps"] == 30 and summary["n_latents"] == 64
    res = runner.invoke(_app(), ["eval-sae", "--sae", str(tmp_path / "run" / "sae"), "--store", str(tmp_path / "acts.safetensors"),
                                 "--out", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["metrics"]["all"]["n_tokens"] == acts.shape[0]
    assert report["metrics"]["all"]["fvu"] < 0.8 and report["metrics"]["all"]["l0"] <= 4


def test_train_rejects_k_not_below_latents(tmp_path):
    save_file({"acts": torch.randn(256, 16)}, str(tmp_path / "a.safetensors"))
    res = CliRunner().invoke(_app(), ["train", "--store", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "r"),
                                      "--k", "64", "--n-latents", "64", "--steps", "3", "--batch-size", "32"])
    assert res.exit_code == 2 and "must be smaller" in res.output
