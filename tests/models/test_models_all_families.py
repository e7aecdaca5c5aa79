"""Every family: real photos and world images, family detection, early exit, replace in generate."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmsae.models import IMAGE, Prompt, supported_model_types

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "gemma3",
            "chameleon"]


def test_every_family_is_detected_from_its_config():
    assert set(FAMILIES) <= set(supported_model_types())


@pytest.mark.parametrize("family", FAMILIES)
def test_real_photo_and_world_image(adapter_of, family):
    skdata = pytest.importorskip("skimage.data")
    from mmsae.world import World, WorldConfig

    a = adapter_of(family)
    assert a.family.startswith(family.split("_")[0]) or family in a.model_types
    photo = Image.fromarray(skdata.chelsea())  # 451x300 cat
    world = World(WorldConfig(seed=0))[2].pil  # 64x64
    enc = a.encode([Prompt([photo], "describe the image"), Prompt([world], "what colour")])
    for table, (w, h) in zip(enc.tables, (photo.size, world.size)):
        img = table.modality == IMAGE
        boxes = table.box[img & ~np.isnan(table.box[:, 0])]
        assert len(boxes) > 0
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w + 1e-9).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= h + 1e-9).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert len(table.covering(w / 2, h / 2)) >= 1
    acts_BSD = a.capture(enc.inputs, a.n_layers // 2)
    assert acts_BSD.shape[-1] == a.d_model and torch.isfinite(acts_BSD).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_early_exit_and_replace_in_generate(adapter_of, family):
    a = adapter_of(family)
    enc = a.encode([Prompt([Image.new("RGB", (40, 30), "red")], "what colour")], padding_side="left")
    ran = []
    hooks = [blk.register_forward_pre_hook(lambda m, args, i=i: ran.append(i))
             for i, blk in enumerate(a.decoder_layers())]
    try:
        a.capture(enc.inputs, 1)
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0, 1]
    kw = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False)
    clean = a.generate(enc.inputs, **kw)
    steps = []
    push = torch.randn(a.d_model, generator=torch.Generator().manual_seed(0)) * 100

    def steer(x_BSD):
        steps.append(x_BSD.shape[1])
        return x_BSD + push

    with a.replace(1, steer):
        steered = a.generate(enc.inputs, **kw)
    assert steps[0] == enc.inputs["input_ids"].shape[1] and steps[1:] == [1, 1]  # KV cache: 1 new position
    assert not torch.equal(steered, clean)
