import numpy as np
import pytest

from mmsae.score import ClipScorer
from mmsae.world import World


def test_clip_score_runs_on_any_hf_clip(tiny_clip_dir):
    scorer = ClipScorer(tiny_clip_dir, device="cpu")
    assert scorer.name == f"clip:{tiny_clip_dir.name}"
    images = [World()[i].pil for i in range(3)]
    s = scorer.score("red star", images)
    assert 0.0 <= s <= 100.0
    # the score is 100 x the mean clipped cosine, computed from the embeddings
    img, txt = scorer.image_embeddings(images), scorer.text_embeddings(["red star"])
    assert abs(s - float(100 * (img @ txt.T).clamp(min=0).mean())) < 1e-4
    assert scorer.score("red star", images, img_ND=img) == pytest.approx(s, abs=1e-5)


def test_random_clip_baseline_is_seeded_and_converges_to_the_pool_average(tiny_clip_dir):
    scorer = ClipScorer(tiny_clip_dir, device="cpu")
    images = [World()[i].pil for i in range(4)]
    pool = ["red", "sand", "roof", "striped star", "glass"]
    a = scorer.random_score(images, pool, np.random.default_rng(0), trials=400)
    b = scorer.random_score(images, pool, np.random.default_rng(0), trials=400)
    assert a == b and a.trials == 400 and a.se > 0
    # closed form: drawing uniformly from the pool, the expected score is the pool's average score
    want = float(np.mean([scorer.score(t, images) for t in pool]))
    assert abs(a.mean - want) < 4 * a.se
    with pytest.raises(ValueError, match="pool"):
        scorer.random_score(images, [], np.random.default_rng(0))


def test_clip_scorer_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no CLIP model"):
        ClipScorer(tmp_path)
