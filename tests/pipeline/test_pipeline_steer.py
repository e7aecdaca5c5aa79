"""The demo's steer stage (the hallucination study) on a small config, and the study's building blocks."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmsae.pipeline import hallucination as hal
from mmsae.pipeline import steer_stage
from mmsae.sae import SAE, SAEConfig
from mmsae.world import WorldConfig

SMALL = hal.StudySettings(n_cases=40, n_control=8, n_vqa_scenes=3, batch=16, m_grid=(1, 2), damp_factors=(0.0, -1.0),
                          damp_tokens=("text",), boost_m=(2,), alpha_grid=(1.0,), random_draws=1, exact_cases=1)


@pytest.fixture(scope="module")
def subject():
    from mmsae.defaults import default_model
    from mmsae.models import load_adapter

    return load_adapter(default_model())


def _demo_sae(out):
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=128, n_latents=256, k=16, hook_layer=3))
    sae.save_pretrained(out / "sae" / "sae")


def test_slice_cases_are_off_prior_single_stars_asking_the_prior_colour():
    cases = hal.slice_cases(12, seed=5)
    prior = WorldConfig().prior_colour
    assert len(cases) == 12
    assert all(c.colour != prior and f"{prior} ?" in c.prompt.text for c in cases)
    assert [c.colour for c in hal.slice_cases(12, seed=5)] == [c.colour for c in cases]  # deterministic


def test_control_cases_have_the_prior_colour():
    prior = WorldConfig().prior_colour
    assert {c.colour for c in hal.slice_cases(6, seed=5, prior_coloured=True)} == {prior}


def test_split_halves_are_disjoint_and_cover():
    a, b = hal.split_halves(list(range(11)), seed=1)
    assert sorted(a + b) == list(range(11)) and len(a) == 5


def test_rank_correlations_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    y = x + 0.5 * y
    assert hal.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert hal.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)
    assert np.isnan(hal.pearson(x[:2], y[:2]))


def test_first_tokens_are_the_generated_first_tokens(subject):
    cases = hal.slice_cases(6, seed=3)
    prompts = [c.prompt for c in cases]
    first = hal.first_tokens(subject, prompts, batch=4)  # right padding, two batches
    words = hal.generated_answers(subject, prompts, batch=6, max_new_tokens=1)
    assert [subject.tokenizer.decode([t]).strip() for t in first] == words
    # encoded once and reused (the study's grid runs each set under every candidate): the same tokens
    encoded = hal.encode_batches(subject, prompts, batch=4)
    for _ in range(2):
        assert np.array_equal(hal.first_tokens(subject, None, encoded=encoded), first)


@pytest.mark.slow
def test_stage_writes_metrics_png_and_paragraph(tmp_path, subject):
    _demo_sae(tmp_path)
    sections = []
    rep = SimpleNamespace(out=tmp_path, metrics={}, add=lambda title, body: sections.append((title, body)))
    steer_stage.stage_steer(rep, SMALL)
    m = rep.metrics
    for key in ("steer.fixed_rate", "steer.random_fixed_rate", "steer.diffmeans_fixed_rate", "steer.prompting_fixed_rate",
                "steer.vqa_accuracy", "steer.vqa_accuracy_steered", "steer.slice_correct_kept", "steer.hallucination_rate", "steer.control_yes_kept",
                "attribute.text_share_hallucinated", "attribute.image_share_correct", "attribute.error_share"):
        assert key in m and (np.isnan(m[key]) or 0.0 <= m[key] <= 1.0), key
    assert m["steer.accuracy_drop"] == pytest.approx(m["steer.vqa_accuracy"] - m["steer.vqa_accuracy_steered"])
    assert 0 < m["steer.hallucination_rate"] < 1  # the zoo subject hallucinates on this slice, not always
    assert (tmp_path / "steer_attribution.png").stat().st_size > 5000
    (title, body), = sections
    assert "held out" in body and "steer_attribution.png" in body and "calibration" in body


def test_stage_needs_the_demo_sae(tmp_path):
    rep = SimpleNamespace(out=tmp_path, metrics={}, add=lambda title, body: None)
    with pytest.raises(FileNotFoundError, match="run the 'sae' stage"):
        steer_stage.stage_steer(rep, SMALL)
