import numpy as np

from mmsae.score import ClipScorer
from mmsae.world import World
from mmsae.zoo import build


def test_clip_score_runs_on_any_hf_clip(tmp_path):
    tok = build.build_tokenizer()
    model, processor = build.build_clip(build.TowerSpec(hidden=32, layers=1, heads=2), tok)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    scorer = ClipScorer(tmp_path)
    images = [World()[i].pil for i in range(3)]
    s = scorer.score("red star", images)
    assert 0.0 <= s <= 100.0
    r = scorer.random_score(images, ["red", "sand", "roof"], np.random.default_rng(0), trials=5)
    assert 0.0 <= r <= 100.0
    # the score is the mean clipped cosine, computed from the embeddings
    img, txt = scorer.image_embeddings(images), scorer.text_embeddings(["red star"])
    assert abs(s - float(100 * (img @ txt.T).clamp(min=0).mean())) < 1e-4
