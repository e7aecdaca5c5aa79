"""Gemma 3: squashed square view, average-pooled tokens, boi/eoi specials."""

import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


@pytest.mark.parametrize("size,marker", [((90, 50), (45, 0, 90, 50)), ((40, 100), (0, 20, 30, 90)),
                                         ((64, 64), (12, 12, 52, 52))])
def test_gemma3_marker_lands_on_pooled_tokens(adapter_of, marker_check, size, marker):
    a = adapter_of("gemma3")
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe the image")])
    table = enc.tables[0]
    cfg = a.model.config
    step = cfg.vision_config.image_size // int(cfg.mm_tokens_per_image ** 0.5)
    pv = enc.inputs["pixel_values"].numpy()
    ip = a.processor.image_processor

    def patch(pos):
        r, c = table.patch_row[pos], table.patch_col[pos]
        return unnormalize(pv[table.image_index[pos], :, r * step:(r + 1) * step, c * step:(c + 1) * step], ip)

    marker_check(table, patch, marker, image_size=size)
    img = (table.modality == IMAGE).nonzero()[0]
    assert table.modality[img[0] - 1] == SPECIAL and table.modality[img[-1] + 1] == SPECIAL  # boi / eoi
    area = ((table.box[img, 2] - table.box[img, 0]) * (table.box[img, 3] - table.box[img, 1])).sum()
    assert area == pytest.approx(size[0] * size[1])


def test_gemma3_capture_and_replace(adapter_of):
    a = adapter_of("gemma3")
    enc = a.encode([Prompt([marker_image(50, 50, (0, 0, 9, 9))], "red"), Prompt([], "what colour")])
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 2), hs[3])
    with a.replace(0, lambda x_BSD: x_BSD * 0):
        assert a.capture(enc.inputs, 0).abs().max() == 0
