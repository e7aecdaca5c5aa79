from math import comb

import numpy as np
import pytest

from mmsae.score import (binarise, concept_groups, entity_concepts, explanation_class, iou, mean_iou, paint,
                         random_region_iou, region_mask)
from mmsae.world import World


def grid_boxes(grid: int = 8, patch: int = 8) -> np.ndarray:
    return np.array([[c * patch, r * patch, (c + 1) * patch, (r + 1) * patch] for r in range(grid) for c in range(grid)],
                    dtype=float)


def test_entity_extraction_uses_the_world_vocabulary():
    assert set(entity_concepts("Red striped stars? no: a red striped star")) == {"red", "striped", "star"}
    assert entity_concepts("the top-left corner") == ["top-left"]
    assert entity_concepts("something blurry") == []
    assert entity_concepts("a striped red star") == ["striped", "red", "star"]  # in the order they are named
    assert concept_groups("red star and grass") == [["red", "star"], ["grass"]]


def test_explanation_class_is_the_class_of_the_head_concept():
    assert explanation_class("red") == "colour"
    assert explanation_class("red star") == "object"
    assert explanation_class("the roof of houses") == "part"
    assert explanation_class("dotted") == "texture"
    assert explanation_class("glass") == "material"
    assert explanation_class("night sky") == "scene"
    assert explanation_class("a blurry thing") == "other"
    assert explanation_class(None) == "other"


def test_iou_binarise_and_painting():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert iou(a, b) == 4 / 12
    assert iou(a, a) == 1.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        iou(a, np.zeros((2, 2), bool))
    assert binarise(np.array([[0.0, 1.0], [0.5, 0.05]]), 0.1).tolist() == [[False, True], [True, False]]
    assert not binarise(np.zeros(3)).any()
    # boxes in original pixels, NaN boxes paint nothing; adjacent boxes tile without gaps
    m = paint(np.array([[0, 0, 4, 2], [4, 0, 8, 2], [np.nan] * 4]), (8, 3))
    assert m.shape == (3, 8) and m[:2].all() and not m[2].any()
    boxes = grid_boxes()
    acts = np.zeros(64)
    acts[[0, 9]] = [1.0, 0.2]
    r = region_mask(boxes, acts, (64, 64))
    assert r.sum() == 2 * 64 and r[:8, :8].all() and r[8:16, 8:16].all()
    assert region_mask(boxes, acts, (64, 64), threshold=0.5).sum() == 64  # only the peak patch stays


def test_an_ideal_feature_scores_far_above_random_regions():
    from mmsae.score import WorldSegmenter

    seg, world = WorldSegmenter(), World()
    idx = [i for i in range(60) if "red" in world[i].concepts()][:5]
    boxes = grid_boxes()
    acts = [world[i].patch_coverage(world[i].concept_mask("red")).ravel() for i in idx]
    regions = [region_mask(boxes, a, (64, 64)) for a in acts]
    segs = [seg.segment(world[i].pil, "red", f"world-0-{i}") for i in idx]
    model = mean_iou(segs, regions)
    rand = random_region_iou(segs, [boxes] * len(idx), [int(binarise(a).sum()) for a in acts],
                             np.random.default_rng(0), trials=50)
    assert model > 0.3
    assert model > 4 * rand.mean
    nothing = [seg.segment(world[i].pil, "nothing we know", f"world-0-{i}") for i in idx]
    assert mean_iou(nothing, regions) == 0.0  # a phrase that grounds nothing counts as IoU 0


def expected_random_iou(n: int, m: int, k: int) -> float:
    """Closed form: a region of k patches drawn uniformly from n vs a fixed mask of exactly m patches.
    The overlap x is hypergeometric and IoU = x / (k + m - x)."""
    return sum(comb(m, x) * comb(n - m, k - x) / comb(n, k) * x / (k + m - x) for x in range(max(0, k + m - n), min(m, k) + 1))


def test_random_region_baseline_matches_the_closed_form_and_is_seeded():
    boxes = grid_boxes()
    fixed = np.zeros(64)
    fixed[[3, 4, 5, 11, 12, 13, 19, 20, 21, 40]] = 1.0
    seg = region_mask(boxes, fixed, (64, 64))  # a mask of exactly 10 patches
    b = random_region_iou([seg], [boxes], [6], np.random.default_rng(1), trials=3000)
    want = expected_random_iou(64, 10, 6)
    assert b.trials == 3000 and b.se > 0
    assert abs(b.mean - want) < 4 * b.se, (b.mean, want, b.se)
    assert b.se < 0.005  # enough trials for a stable mean
    again = random_region_iou([seg], [boxes], [6], np.random.default_rng(1), trials=3000)
    assert again == b
    other = random_region_iou([seg], [boxes], [6], np.random.default_rng(2), trials=3000)
    assert other.mean != b.mean
    # the whole image as the region: every trial is the same (IoU = 10/64), so no spread
    full = random_region_iou([seg], [boxes], [64], np.random.default_rng(0), trials=5)
    assert full.mean == pytest.approx(10 / 64) and full.se == 0.0


def test_random_region_skips_patches_without_pixels():
    boxes = grid_boxes()
    boxes[32:] = np.nan  # the lower half is padding: random regions can only land on the upper half
    seg = np.zeros((64, 64), bool)
    seg[:32] = True
    b = random_region_iou([seg], [boxes], [8], np.random.default_rng(0), trials=20)
    assert b.mean == pytest.approx(8 / 32)


def test_random_explanation_iou_draws_other_explanations():
    from mmsae.score.iou import random_explanation_iou

    region = np.zeros((8, 8), bool)
    region[2:5, 2:5] = True

    def segment(image, phrase, sample_id):  # only explanation "a" grounds onto the region
        return region.copy() if phrase == "a" else np.zeros_like(region)

    pool = ["a", "b", "c", "d"]
    b = random_explanation_iou(segment, [None, None], ["s0", "s1"], [region, region], pool, str,
                               np.random.default_rng(0), trials=400)
    assert abs(b.mean - 0.25) < 3 * b.se + 0.02  # one of four draws scores 1, the rest 0
    again = random_explanation_iou(segment, [None, None], ["s0", "s1"], [region, region], pool, str,
                                   np.random.default_rng(0), trials=400)
    assert again.mean == b.mean  # seeded
    with pytest.raises(ValueError, match="no other explanation"):
        random_explanation_iou(segment, [None], ["s0"], [region], [], str, np.random.default_rng(0))


def test_random_image_baseline_averages_random_draws_and_grounds_each_image_once():
    from mmsae.score import random_image_iou

    full, half, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    half[:2] = True
    # pool image i: (segmentation, region) with IoU 1, 0.5, 0 (concept absent) and 0 (neither found)
    pairs = [(full, full), (full, half), (full, empty), (empty, empty)]
    calls = []

    def segment(i):
        calls.append(i)
        return pairs[i][0]

    b = random_image_iou(segment, lambda i: pairs[i][1], 4, 4, np.random.default_rng(0), trials=7)
    assert b.mean == pytest.approx(1.5 / 4) and b.se == 0 and b.trials == 7  # every trial draws the whole pool
    assert sorted(calls) == [0, 1, 2, 3]  # each image grounded once, however often drawn
    one = random_image_iou(lambda i: pairs[i][0], lambda i: pairs[i][1], 4, 1, np.random.default_rng(1), trials=4000)
    assert one.mean == pytest.approx(1.5 / 4, abs=0.03) and one.se > 0
    with pytest.raises(ValueError, match="no random images"):
        random_image_iou(segment, segment, 0, 5, np.random.default_rng(0))
