"""LLaVA-NeXT: AnyRes tiles, unpadding and image_newline mapped back to original pixels."""

import numpy as np
import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


def _next_patch(adapter, enc, table):
    cfg = adapter.model.config
    p = int(cfg.vision_config.patch_size)
    ip = adapter.processor.image_processor
    pv = enc.inputs["pixel_values"].numpy()  # [images, tiles, 3, H, W]

    def patch(pos):
        i, t, r, c = table.image_index[pos], table.tile[pos], table.patch_row[pos], table.patch_col[pos]
        return unnormalize(pv[i, t, :, r * p:(r + 1) * p, c * p:(c + 1) * p], ip)

    return patch


@pytest.mark.parametrize("size,marker", [((90, 50), (30, 10, 70, 40)), ((40, 100), (4, 50, 36, 95)),
                                         ((70, 70), (10, 10, 40, 40)), ((33, 31), (8, 8, 30, 28))])
def test_next_marker_lands_on_base_and_tile_tokens(adapter_of, marker_check, size, marker):
    a = adapter_of("llava_next")
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe")])
    table = enc.tables[0]
    marker_check(table, _next_patch(a, enc, table), marker)
    cx, cy = (marker[0] + marker[2]) / 2, (marker[1] + marker[3]) / 2
    tiles = set(table.tile[table.covering(cx, cy)])
    assert 0 in tiles and len(tiles) == 2  # the base view and exactly one high-res tile see each pixel
    # the model's unpadding works on whole feature rows, so a sliver of real content at the padded
    # edges can be dropped; the high-res tokens still cover nearly all of the image
    hi = table.box[(table.modality == IMAGE) & (table.tile > 0)]
    area = ((hi[:, 2] - hi[:, 0]) * (hi[:, 3] - hi[:, 1])).sum()
    assert 0.8 * size[0] * size[1] <= area <= size[0] * size[1] + 1e-6


def test_next_order_matches_the_models_feature_packing(adapter_of):
    """Feed features that encode (tile, row, col) through the model's own pack_image_features and
    check they land where the token table says."""
    a = adapter_of("llava_next")
    img = marker_image(90, 50, (0, 0, 5, 5))
    enc = a.encode([Prompt([img], "")])
    table = enc.tables[0]
    cfg = a.model.config
    g = cfg.vision_config.image_size // cfg.vision_config.patch_size
    n_tiles = enc.inputs["pixel_values"].shape[1]
    t, r, c = torch.meshgrid(torch.arange(n_tiles), torch.arange(g), torch.arange(g), indexing="ij")
    feats = torch.stack([t, r, c], -1).reshape(n_tiles, g * g, 3).float()
    newline = torch.full((3,), -7.0)
    packed = a.model.model.pack_image_features([feats], enc.inputs["image_sizes"], "default", newline)[0][0]
    img_rows = np.flatnonzero(table.image_index == 0)
    assert len(packed) == len(img_rows)
    is_img = table.modality[img_rows] == IMAGE
    expect = np.stack([table.tile[img_rows], table.patch_row[img_rows], table.patch_col[img_rows]], 1)
    assert np.array_equal(packed.numpy()[is_img], expect[is_img])
    assert (packed.numpy()[~is_img] == -7).all() and (table.modality[img_rows][~is_img] == SPECIAL).all()
    assert (~is_img).sum() > 0  # newlines exist


def test_next_capture_and_early_exit(adapter_of):
    a = adapter_of("llava_next")
    enc = a.encode([Prompt([marker_image(60, 40, (0, 0, 9, 9))], "a red square"), Prompt([], "what")])
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 1), hs[2])
