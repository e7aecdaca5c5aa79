import numpy as np
import pytest
from PIL import Image

from mmsae.saev.patches import kept, mask_image, patch_experiment, patch_scores, world_items
from mmsae.saev.scoring import ListSource, coded_records


def test_mask_blacks_out_exactly_the_dropped_boxes():
    im = Image.fromarray(np.full((16, 16, 3), 200, np.uint8))
    boxes = np.array([[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]], float)
    out = np.asarray(mask_image(im, boxes, np.array([True, False, False, True])))
    assert (out[:8, :8] == 200).all() and (out[8:, 8:] == 200).all()
    assert (out[:8, 8:] == 0).all() and (out[8:, :8] == 0).all()


def test_kept_fraction_and_ties():
    assert kept(np.array([1, 3, 3, 2]), 0.5).tolist() == [False, True, True, False]
    assert kept(np.array([1, 1, 1, 1]), 0.5).tolist() == [True, True, False, False]
    assert kept(np.array([1.0, 2, 3, 4]), 0.01).sum() == 1
    with pytest.raises(ValueError, match="keep must be in"):
        kept(np.ones(3), 0)


def test_patch_scores_read_the_patch_tokens(subject, sae, records):
    coded = next(c for _, cs in coded_records(subject, sae, ListSource(records[:1]), [0], 3, lambda *a: None) for c in cs)
    w = np.linspace(0, 1, sae.cfg.n_latents)
    (ps,) = patch_scores(coded, w)
    assert len(ps.box_P4) == 64 and set(ps.scores) == {"l0", "l1", "cosine", "random"}
    img = np.flatnonzero(coded.table.modality == 1)
    codes = coded.codes_TF.numpy()[img]
    assert np.allclose(ps.scores["l0"], (codes > 0).sum(1)) and np.allclose(ps.scores["l1"], codes.sum(1), rtol=1e-5)
    assert np.allclose(ps.scores["cosine"], ((codes > 0) * w).sum(1))
    # every original pixel is covered by exactly one patch of the 8x8 grid
    masked = np.asarray(mask_image(ps.image, ps.box_P4, np.ones(64, bool)))
    assert (masked == np.asarray(ps.image)).all()


def test_experiment_runs_and_full_images_score_the_same_for_all_methods(subject, sae, tmp_path):
    items = world_items(6, seed=11)
    res = patch_experiment(subject, sae, items, keeps=(1.0, 0.25), save_dir=tmp_path, save_n=1)
    acc = res["accuracy"]
    assert res["n_images"] == 6 and set(acc) == {"l0", "l1", "random"}
    assert len({acc[m][1.0] for m in acc}) == 1  # nothing masked: one accuracy
    assert len(list(tmp_path.rglob("*.png"))) == 6


def test_cosine_needs_a_weighted_feature(subject, sae):
    items = world_items(2, seed=11, kind="object")
    none = patch_experiment(subject, sae, items, keeps=(0.5,), weights_F=np.full(sae.cfg.n_latents, np.nan))
    assert set(none["accuracy"]) == {"l0", "l1", "random"}  # all-null weights: every patch would score 0
    w = np.full(sae.cfg.n_latents, np.nan)
    w[:8] = 0.5
    assert "cosine" in patch_experiment(subject, sae, items, keeps=(0.5,), weights_F=w)["accuracy"]
