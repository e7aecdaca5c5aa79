"""The demo's fine-tuning stage on a microscopic config: metrics, PNG and paragraph (the sizes are patched)."""

from types import SimpleNamespace

import pytest
import torch

from mmsae.finetune.experiment import ExperimentConfig
from mmsae.pipeline import finetune_stage
from mmsae.sae import SAE, SAEConfig


def _demo_sae(out):
    """What the demo's 'sae' stage leaves: a TopK SAE on the subject's layer 3 (random here; the stage only
    needs it to score records)."""
    torch.manual_seed(0)
    SAE.from_config(SAEConfig(kind="topk", d_in=128, n_latents=256, k=16, hook_layer=3)).save_pretrained(
        out / "sae" / "sae")


@pytest.mark.slow
def test_stage_writes_metrics_png_and_paragraph(tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_stage, "STAGE_CFG", ExperimentConfig(
        n_train=20, n_eval=6, keeps=(0.5,), seeds=(0, 1), budgets=("steps",), epochs=0.5, batch=4))
    _demo_sae(tmp_path)
    sections = []
    rep = SimpleNamespace(out=tmp_path, metrics={}, add=lambda title, body: sections.append((title, body)))
    finetune_stage.stage_finetune(rep)
    m = rep.metrics
    assert "filter.l0.auroc" not in m  # the demo SAE is TopK: l0 would rank every record alike
    for key in ("finetune.all.1.accuracy", "finetune.clean.0.6.accuracy", "finetune.random.0.5.accuracy",
                "finetune.ifd.0.5.accuracy", "finetune.random.0.5.accuracy_sd", "finetune.cooccur.0.5.accuracy",
                "filter.random.auroc", "filter.ifd.auroc", "filter.cooccur.auroc"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    assert (tmp_path / "finetune" / "accuracy_vs_kept.png").stat().st_size > 1000
    (title, body), = sections
    assert "AUROC" in body and "Honestly" in body and "finetune/accuracy_vs_kept.png" in body
    before = dict(m)
    finetune_stage.stage_finetune(rep)  # a rerun reads the finished arms back: same numbers
    assert rep.metrics == before


def test_stage_needs_the_demo_sae(tmp_path):
    rep = SimpleNamespace(out=tmp_path, metrics={}, add=lambda title, body: None)
    with pytest.raises(FileNotFoundError, match="run the 'sae' stage \\(or 'saev'\\)"):
        finetune_stage._sae_scores(rep, {"data_dir": tmp_path})
