import numpy as np

from mmsae.score import WorldSegmenter, binarise, entity_concepts, iou, iou_score, random_region_iou, upsample
from mmsae.world import World


def test_entity_extraction_uses_the_world_vocabulary():
    assert set(entity_concepts("Red striped stars? no: a red striped star")) == {"red", "striped", "star"}
    assert entity_concepts("the top-left corner") == ["top-left"]
    assert entity_concepts("something blurry") == []


def test_iou_basics():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert iou(a, b) == 4 / 12
    assert iou(a, a) == 1.0
    assert iou(np.zeros_like(a), np.zeros_like(a)) == 0.0
    assert binarise(np.array([[0.0, 1.0], [0.5, 0.05]]), 0.1).tolist() == [[False, True], [True, False]]
    assert upsample(np.eye(2, dtype=bool), 4).sum() == 8


def test_an_ideal_feature_scores_far_above_random_regions():
    seg = WorldSegmenter()
    world = World()
    idx = [i for i in range(60) if "red" in world[i].concepts()][:5]
    maps = [world[i].patch_coverage(world[i].concept_mask("red")) for i in idx]
    model = iou_score(seg.segment, "red", idx, maps, 64)
    rand = random_region_iou(seg.segment, "red", idx, maps, 64, np.random.default_rng(0))
    assert model > 0.3
    assert model > 4 * rand
    assert iou_score(seg.segment, "nothing we know", idx, maps, 64) == 0.0
