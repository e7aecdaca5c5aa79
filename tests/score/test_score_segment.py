import numpy as np
import pytest
from PIL import Image

from mmsae.score import GroundedSAMSegmenter, WorldSegmenter, mean_iou, rule_phrase
from mmsae.world import World, WorldConfig


def test_world_segmenter_picks_the_scene_of_the_sample_id():
    seg = WorldSegmenter()
    a, b = World(WorldConfig(seed=3))[17], World(WorldConfig(seed=0))[17]
    for concept in sorted(a.concepts()):
        assert np.array_equal(seg.segment(a.pil, concept, "world-3-17"), a.concept_mask(concept))
    # the same index under another seed is another scene: its masks come from that scene
    assert np.array_equal(seg.segment(None, b.background, "world-0-17"), b.concept_mask(b.background))
    assert not np.array_equal(seg.segment(None, a.background, "world-3-17"), seg.segment(None, a.background, "world-0-17")) \
        or a.background != b.background
    with pytest.raises(ValueError, match="not a world sample"):
        seg.segment(None, "red", "images/cat.png")
    with pytest.raises(ValueError, match="32x32"):
        seg.segment(Image.new("RGB", (32, 32)), "red", "world-3-17")


def test_world_segmenter_reads_phrases_as_a_grounder_does():
    world = World()
    scene = next(world[i] for i in range(200) if len({o.kind for o in world[i].objects}) == len(world[i].objects) >= 2)
    o, other = scene.objects[0], scene.objects[1]
    seg = WorldSegmenter()
    sid = f"world-0-{scene.index}"
    one = seg.segment(None, f"{o.colour} {o.kind}", sid)  # one thing: colour AND kind
    assert np.array_equal(one, scene.concept_mask(o.colour) & scene.concept_mask(o.kind))
    both = seg.segment(None, f"{o.kind} and {other.kind}", sid)  # two things: their union
    assert np.array_equal(both, scene.concept_mask(o.kind) | scene.concept_mask(other.kind))
    assert not seg.segment(None, "a blurry thing", sid).any()


def test_rule_phrase_keeps_the_entity():
    assert rule_phrase("Highlighted regions of the red star.") == "red star"
    assert rule_phrase("the sky") == "sky"
    assert rule_phrase("dog with a hat") == "dog with hat"


def test_grounded_sam_with_tiny_random_models_returns_image_sized_masks(tiny_grounded_sam):
    gd, sam = tiny_grounded_sam
    image = Image.fromarray((np.random.default_rng(0).random((48, 80, 3)) * 255).astype("uint8"))
    seg = GroundedSAMSegmenter(gd, sam, box_threshold=0.0, text_threshold=0.0, device="cpu")
    assert seg.name == "grounded-sam:grounding-dino+sam"
    assert seg.prompt("Red star and grass.") == "red star . grass ."
    boxes = seg.detect(image, "red star")
    assert boxes.shape[1] == 4 and len(boxes) > 0  # random weights: every query passes a 0 threshold
    mask = seg.segment(image, "red star")
    assert mask.dtype == bool and mask.shape == (48, 80)
    # nothing passes a box threshold of 1 (scores are sigmoids): an empty mask, and IoU 0 against any region
    seg.box_threshold = 1.0
    assert len(seg.detect(image, "red star")) == 0
    empty = seg.segment(image, "red star", "any-id")
    assert empty.dtype == bool and empty.shape == (48, 80) and not empty.any()
    region = np.zeros((48, 80), bool)
    region[:10, :10] = True
    assert mean_iou([empty], [region]) == 0.0
    assert not seg.segment(image, " . ").any()  # an empty phrase grounds nothing


def test_grounded_sam_names_missing_checkpoints(tmp_path, tiny_grounded_sam):
    gd, _ = tiny_grounded_sam
    with pytest.raises(FileNotFoundError, match="no SAM model"):
        GroundedSAMSegmenter(gd, tmp_path)


def test_llm_phrases_fall_back_to_the_rule_and_say_why():
    from mmsae.llm import Completion
    from mmsae.score import llm_phrases

    class FakeLLM:
        name = "fake-llm"

        def __init__(self):
            self.batch = None

        def complete_many(self, batch):
            self.batch = batch
            return [Completion("Red star."), Completion(None, "HTTP 500: down"), Completion("  ")]

    llm = FakeLLM()
    phrases, problems = llm_phrases(["the highlighted red stars", "regions of the sky", "glass"], llm)
    assert phrases == ["red star", "sky", "glass"]
    assert problems[0] is None and "HTTP 500" in problems[1] and "used the rule" in problems[2]
    assert "the highlighted red stars" in llm.batch[0][-1]["content"]  # the phrase-v1 template carries the explanation
