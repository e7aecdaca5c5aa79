from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Rep:
    out: Path
    sections: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def add(self, title, body):
        self.sections.append((title, body))


@pytest.mark.slow
def test_stage_saev_reports_every_key(tmp_path):
    from mmsae.pipeline.saev_stage import stage_saev

    rep = Rep(tmp_path)
    stage_saev(rep, n_train=16, n_text=40, n_eval=8, steps=10, n_index=12, n_patch=6, splice_records=4)
    m = rep.metrics
    for model in ("sae_text", "saev", "sae_text_relu", "saev_relu"):
        for key in ("fvu_image", "fvu_text", "fvu_textonly", "l0_image", "dead_image", "ce_recovered_text", "delta_ce_text",
                    "delta_ce_textonly", "kl_textonly"):
            assert f"saev.{model}.{key}" in m, (model, key)
    for method in ("l0", "l1", "random") + (("cosine",) if m["saev.crossmodal.n_weighted"] else ()):
        for keep in (100, 75, 50, 25):
            assert 0 <= m[f"saev.patch.{method}.{keep}"] <= 1
    assert (tmp_path / "saev_crossmodal.png").exists() and (tmp_path / "saev_patches.png").exists()
    title, body = rep.sections[0]
    assert "SAE-V" in title and "| sae_text |" in body
