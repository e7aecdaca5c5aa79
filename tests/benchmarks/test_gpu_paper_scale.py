"""benchmarks/gpu_paper_scale.py: the --tiny run end to end on CPU, and the 8B-shaped model's shapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_every_part_as_flat_keys(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    out = tmp_path / "tiny.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_paper_scale.py"), "--tiny", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert all(isinstance(v, (bool, int, float, str)) for v in r.values())  # flat
    assert not any(".error" in key for key in r), {k: v for k, v in r.items() if ".error" in k}
    assert r["config.tiny"] is True and r["config.device"] == "cpu"
    assert r["device.bf16_matmul_tflops"] > 0
    assert r["train.tokens_per_s.mmsae"] > 0 and r["train.steps_timed.mmsae"] >= 1
    assert 0 < r["train.fraction_of_floor.mmsae"] <= 1
    assert 0 < r["train.fvu.mmsae"] < 1
    for peer in ("sparsify", "saelens"):  # measured, or skipped with the reason
        assert (f"train.tokens_per_s.{peer}" in r) != (f"train.skipped.{peer}" in r)
        if f"train.skipped.{peer}" in r:
            assert r[f"train.skipped.{peer}"].startswith("not installed")
            assert f"train.ratio_to_{peer}" not in r
    assert r["harvest.layer"] == 2 and r["harvest.blocks"] == 3
    assert r["harvest.tokens_per_s"] > 0 and r["harvest.records"] >= 4 and r["harvest.shards"] >= 1
    assert 0 < r["harvest.decoder_floor_fraction"] <= 1
    for part in ("device", "train", "harvest", "total"):
        assert r[f"time.{part}_s"] >= 0
    assert r["time.total_s"] < 60


def test_the_paper_model_has_llava_next_8b_shapes_truncated_after_block_25():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from gpu_paper_scale import PAPER, decoder_block_params, llava_next_8b_shaped

    model, processor = llava_next_8b_shaped(PAPER["layer"] + 1, "meta")  # shapes only, no memory
    text = model.config.text_config
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (4096, 14336, 26)
    assert decoder_block_params(model) == 26 * 218_112_000  # Llama-3-8B's block: attention (GQA 8) + MLP + norms
    assert model.config.vision_config.num_hidden_layers == 24 and next(model.parameters()).dtype == torch.bfloat16
    assert torch.get_default_dtype() == torch.float32  # restored
    assert processor.image_processor.image_grid_pinpoints[2] == [672, 672]
