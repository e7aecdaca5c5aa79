"""Qwen2-VL and Qwen2.5-VL: smart_resize, 2x2 merged tokens mapped back to original pixels."""

import numpy as np
import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


def _qwen_patch(adapter, enc, table):
    vc = adapter.model.config.vision_config
    p, m = vc.patch_size, vc.spatial_merge_size
    ip = adapter.processor.image_processor
    pv = enc.inputs["pixel_values"].numpy()
    thw = enc.inputs["image_grid_thw"].numpy()
    offsets = np.concatenate([[0], np.cumsum(thw.prod(1))])

    def patch(pos):
        i, r, c = table.image_index[pos], table.patch_row[pos], table.patch_col[pos]
        gw = thw[i, 2] // m
        k = r * gw + c
        rows = pv[offsets[i] + k * m * m: offsets[i] + (k + 1) * m * m].reshape(m, m, 3, -1, p, p)[:, :, :, 0]
        block = rows.transpose(2, 0, 3, 1, 4).reshape(3, m * p, m * p)  # (C, mh*ph, mw*pw)
        return unnormalize(block, ip)

    return patch


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("size,marker", [((90, 50), (25, 0, 90, 50)), ((200, 60), (100, 0, 170, 60)),
                                         ((100, 100), (0, 0, 100, 60))])
def test_qwen_marker_lands_on_merged_tokens(adapter_of, marker_check, family, size, marker):
    a = adapter_of(family)
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe the image")])
    table = enc.tables[0]
    marker_check(table, _qwen_patch(a, enc, table), marker, image_size=size)
    cx, cy = (marker[0] + marker[2]) / 2, (marker[1] + marker[3]) / 2
    assert len(table.covering(cx, cy)) == 1
    # the resized image covers the original exactly: boxes tile it without gaps
    img = table.modality == IMAGE
    area = ((table.box[img, 2] - table.box[img, 0]) * (table.box[img, 3] - table.box[img, 1])).sum()
    assert area == pytest.approx(size[0] * size[1])
    start = np.flatnonzero(img)[0]
    assert table.modality[start - 1] == SPECIAL and table.modality[np.flatnonzero(img)[-1] + 1] == SPECIAL


def test_qwen_two_images_batch_and_capture(adapter_of):
    a = adapter_of("qwen2_5_vl")
    imgs = [marker_image(90, 50, (0, 0, 20, 20)), marker_image(30, 60, (0, 0, 20, 20))]
    enc = a.encode([Prompt(imgs, "<image> and <image> compare"), Prompt([], "red")])
    t = enc.tables[0]
    assert set(t.image_index[t.modality == IMAGE]) == {0, 1}
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 2), hs[3])


def test_qwen_processor_is_rebuilt_from_parts(tiny_dir):
    from mmsae.models import load_adapter

    a = load_adapter(tiny_dir("qwen2_vl"))
    assert hasattr(a.processor, "image_processor") and not hasattr(a.processor, "video_processor")
