"""The demo's fine-tuning stage on a microscopic config: metrics, PNG and paragraph (the sizes are patched)."""

from types import SimpleNamespace

import pytest

from mmsae.finetune.experiment import ExperimentConfig
from mmsae.pipeline import finetune_stage


@pytest.mark.slow
def test_stage_writes_metrics_png_and_paragraph(tmp_path, monkeypatch):
    monkeypatch.setattr(finetune_stage, "STAGE_CFG", ExperimentConfig(
        n_train=20, n_eval=6, keeps=(0.5,), seeds=(0, 1), budgets=("steps",), epochs=0.5, batch=4))
    sections = []
    rep = SimpleNamespace(out=tmp_path, metrics={}, add=lambda title, body: sections.append((title, body)))
    finetune_stage.stage_finetune(rep)
    m = rep.metrics
    for key in ("finetune.all.1.accuracy", "finetune.clean.0.6.accuracy", "finetune.random.0.5.accuracy",
                "finetune.ifd.0.5.accuracy", "finetune.random.0.5.accuracy_sd", "filter.random.auroc",
                "filter.ifd.auroc"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    assert (tmp_path / "finetune" / "accuracy_vs_kept.png").stat().st_size > 1000
    (title, body), = sections
    assert "AUROC" in body and "Honestly" in body and "finetune/accuracy_vs_kept.png" in body
    before = dict(m)
    finetune_stage.stage_finetune(rep)  # a rerun reads the finished arms back: same numbers
    assert rep.metrics == before
