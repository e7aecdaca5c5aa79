"""`mmsae train` and the `Trainer` API train the same SAE, byte for byte: the store's own defaults (norm scale,
layer, model from its manifest) are applied inside the API, not only in the CLI."""

import json
import math

from click.testing import CliRunner

from mmsae.cli import command
from mmsae.pipeline.layer import harvest_layer
from mmsae.store import ActivationStore
from mmsae.train import StoreBatches, TrainConfig, Trainer

ARGS = dict(k=4, n_latents=64, steps=20, warmup_steps=5, log_every=5, plots=False, seed=3)


def test_cli_and_api_give_byte_identical_weights(tmp_path):
    store = harvest_layer(tmp_path / "store", 3, n=6, seed=1)
    flags = ["--k", "4", "--n-latents", "64", "--steps", "20", "--warmup-steps", "5", "--log-every", "5",
             "--no-plots", "--seed", "3", "--batch-size", "64"]
    res = CliRunner().invoke(command(), ["train", "--store", str(store), "--out", str(tmp_path / "cli"), *flags])
    assert res.exit_code == 0, res.output
    Trainer(TrainConfig(**ARGS), StoreBatches(store, 64, seed=3), tmp_path / "api").fit()

    cli_sae, api_sae = tmp_path / "cli" / "sae", tmp_path / "api" / "sae"
    weights = sorted(p.name for p in cli_sae.glob("*.safetensors"))
    assert weights and weights == sorted(p.name for p in api_sae.glob("*.safetensors"))
    for name in weights:
        assert (cli_sae / name).read_bytes() == (api_sae / name).read_bytes(), name
    cfg = json.loads((api_sae / "config.json").read_text())
    assert cfg == json.loads((cli_sae / "config.json").read_text())
    manifest = ActivationStore(store).manifest
    assert cfg["hook_layer"] == 3 == manifest["layer"]
    assert cfg["norm_scale"] == math.sqrt(manifest["d_in"]) / manifest["mean_norm"]  # the manifest's, not batch 1's
    resolved = json.loads((tmp_path / "cli" / "config.json").read_text())  # the CLI run's resolved config
    assert resolved["config"] == "TrainJob" and resolved["norm_scale"] == cfg["norm_scale"] and resolved["k"] == 4


def test_explicit_values_beat_the_source_defaults(tmp_path):
    store = harvest_layer(tmp_path / "store", 3, n=6, seed=1)
    trainer = Trainer(TrainConfig(**{**ARGS, "steps": 2}, norm_scale=0.5, hook_layer=7), StoreBatches(store, 64), tmp_path / "o")
    assert trainer.cfg.norm_scale == 0.5 and trainer.cfg.hook_layer == 7
    assert trainer.cfg.model == ActivationStore(store).manifest["model"]["path"]  # what was left None is filled
