import numpy as np
import pytest

from mmsae.world import World, WorldConfig, concept_class
from mmsae.world.render import SECONDARY_SHADE
from mmsae.world.vocab import COLOURS, CONCEPT_CLASSES, PARTS


def test_scenes_are_deterministic_per_seed_and_index():
    a, b = World(WorldConfig(seed=3)), World(WorldConfig(seed=3))
    assert np.array_equal(a[7].image, b[7].image)
    assert a[7].objects == b[7].objects
    assert not np.array_equal(a[7].image, a[8].image)
    assert not np.array_equal(a[7].image, World(WorldConfig(seed=4))[7].image)


def test_default_world_gives_at_least_64_patches():
    cfg = WorldConfig()
    assert cfg.grid**2 >= 64
    assert World(cfg)[0].image.shape == (cfg.image_size, cfg.image_size, 3)


@pytest.mark.parametrize("index", range(12))
def test_masks_partition_the_image(index):
    scene = World()[index]
    covered = np.zeros(scene.image.shape[:2], dtype=int)
    for i, o in enumerate(scene.objects):
        a, b = (scene.part_masks[i][p] for p in PARTS[o.kind])
        assert not (a & b).any(), "parts of one object overlap"
        assert np.array_equal(a | b, scene.object_mask(i))
        covered += scene.object_mask(i)
    assert covered.max() <= 1, "visible object masks overlap (occlusion not applied)"
    assert np.array_equal(covered == 0, scene.background_mask)
    assert np.array_equal(scene.concept_mask(scene.background), scene.background_mask)


def test_every_present_concept_has_pixels_and_absent_ones_have_none():
    scene = World()[5]
    present = scene.concepts()
    for cls, names in CONCEPT_CLASSES.items():
        for name in names:
            assert scene.concept_mask(name).any() == (name in present), (cls, name)


def test_masks_are_exact_for_a_flat_object():
    cfg = WorldConfig(seed=1, min_objects=1, max_objects=1,
                      forced=(("colour", "red"), ("material", "matte"), ("texture", "plain"), ("object", "house")))
    scene = World(cfg)[0]
    red = np.array(COLOURS["red"])
    wall, roof = scene.concept_mask("wall"), scene.concept_mask("roof")
    assert wall.sum() > 20 and roof.sum() > 10
    assert (scene.image[wall] == red).all()
    assert np.abs(scene.image[roof].astype(float) - red * SECONDARY_SHADE).max() <= 1
    # no pixel outside the object has the object's exact colour
    assert not (scene.image[~scene.concept_mask("house")] == red).all(axis=-1).any()


def test_forced_concepts_appear():
    for cls in ("scene", "object", "part", "colour", "texture", "material", "size", "position"):
        value = CONCEPT_CLASSES[cls][1]
        scene = World(WorldConfig(seed=2, forced=((cls, value),)))[0]
        assert value in scene.concepts()
        assert scene.concept_mask(value).any()


def test_unknown_concept_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown concept 'zebra'"):
        World()[0].concept_mask("zebra")
    with pytest.raises(ValueError, match="unknown concept"):
        concept_class("zebra")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": 16}, "below the minimum"),
        ({"image_size": 64, "patch_size": 7}, "not a multiple"),
        ({"image_size": 48, "patch_size": 16}, "at least 4x4"),
        ({"max_objects": 5}, "objects per image"),
        ({"prior_colour": "teal"}, "prior_colour"),
        ({"forced": (("colour", "teal"),)}, "forced concept"),
    ],
)
def test_impossible_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**kwargs)


def test_prior_bias_slice():
    world = World(WorldConfig(seed=0))
    stars = [o.colour for i in range(600) for o in world[i].objects if o.kind == "star"]
    others = [o.colour for i in range(600) for o in world[i].objects if o.kind != "star"]
    assert len(stars) > 100
    assert 0.9 < np.mean([c == "yellow" for c in stars]) < 0.99
    assert np.mean([c == "yellow" for c in others]) < 0.2
    unbiased = World(WorldConfig(seed=0, prior_strength=0.0))
    assert all(o.colour != "yellow" for i in range(100) for o in unbiased[i].objects if o.kind == "star")


def test_counts_sizes_and_occlusion_vary():
    scenes = [World()[i] for i in range(200)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {o.size for s in scenes for o in s.objects} == set(CONCEPT_CLASSES["size"])


def test_occlusion_hides_earlier_objects():
    # find a scene where two objects overlap and check the earlier one lost exactly the later one's pixels
    from mmsae.world.render import part_masks

    for i in range(400):
        s = World()[i]
        if len(s.objects) < 2:
            continue
        full = [part_masks(o.kind, *o.centre, o.radius, 64) for o in s.objects]
        full_any = [m[o.parts[0]] | m[o.parts[1]] for m, o in zip(full, s.objects)]
        if (full_any[0] & full_any[-1]).any():
            assert not (s.object_mask(0) & full_any[-1]).any()
            assert (full_any[0] & ~s.object_mask(0)).any()
            return
    pytest.fail("no overlapping objects in 400 scenes")


def test_forcing_the_prior_kind_keeps_the_prior():
    biased = World(WorldConfig(seed=5, forced=(("object", "star"),)))
    colours = [biased[i].objects[0].colour for i in range(200)]
    assert 0.88 < np.mean([c == "yellow" for c in colours]) < 0.99
    never = World(WorldConfig(seed=5, prior_strength=0.0, forced=(("object", "star"),)))
    assert all(never[i].objects[0].colour != "yellow" for i in range(200))
    assert all(never[i].objects[0].kind == "star" for i in range(200))
