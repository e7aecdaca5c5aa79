"""LLaVA-OneVision: AnyRes as NeXT, anyres_max_9 shrinking, multi-image single views."""

import numpy as np
import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


def _patch(adapter, enc, table):
    cfg = adapter.model.config
    p = int(cfg.vision_config.patch_size)
    ip = adapter.processor.image_processor
    pv = enc.inputs["pixel_values"].numpy()

    def patch(pos):
        i, t, r, c = table.image_index[pos], table.tile[pos], table.patch_row[pos], table.patch_col[pos]
        return unnormalize(pv[i, t, :, r * p:(r + 1) * p, c * p:(c + 1) * p], ip)

    return patch


@pytest.mark.parametrize("size,marker", [((90, 50), (30, 10, 70, 40)), ((40, 100), (4, 50, 36, 95))])
def test_onevision_marker(adapter_of, marker_check, size, marker):
    a = adapter_of("llava_onevision")
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe")])
    table = enc.tables[0]
    marker_check(table, _patch(a, enc, table), marker, image_size=size)
    cx, cy = (marker[0] + marker[2]) / 2, (marker[1] + marker[3]) / 2
    tiles = set(table.tile[table.covering(cx, cy)].tolist())
    assert 0 in tiles and len(tiles) == 2  # base view + one high-res tile


def _tags(n_tiles, g):
    t, r, c = torch.meshgrid(torch.arange(n_tiles), torch.arange(g), torch.arange(g), indexing="ij")
    return torch.stack([t, r, c], -1).reshape(n_tiles, g * g, 3).float()


def test_onevision_order_matches_model_packing(adapter_of):
    a = adapter_of("llava_onevision")
    g = a.model.config.vision_config.image_size // a.model.config.vision_config.patch_size
    enc = a.encode([Prompt([marker_image(90, 50, (0, 0, 5, 5))], "")])
    table = enc.tables[0]
    n_tiles = enc.inputs["pixel_values"].shape[1]
    packed = a.model.model.pack_image_features([_tags(n_tiles, g)], enc.inputs["image_sizes"],
                                               torch.full((3,), -7.0), "anyres_max_9")[0][0].numpy()
    rows = np.flatnonzero(table.image_index == 0)
    is_img = table.modality[rows] == IMAGE
    expect = np.stack([table.tile[rows], table.patch_row[rows], table.patch_col[rows]], 1)
    assert len(packed) == len(rows) and np.array_equal(packed[is_img], expect[is_img])
    assert (packed[~is_img] == -7).all()


def test_onevision_large_image_shrunk_grid_matches_model(adapter_of):
    """anyres_max_9: the model bilinearly shrinks the grid; fed global (row, col) coordinates, each
    token's interpolated value must sit at the centre of its box (in grid units)."""
    a = adapter_of("llava_onevision")
    cfg = a.model.config
    g = cfg.vision_config.image_size // cfg.vision_config.patch_size
    enc = a.encode([Prompt([marker_image(400, 300, (0, 0, 5, 5))], "")])
    table = enc.tables[0]
    n_tiles = enc.inputs["pixel_values"].shape[1]
    tags = _tags(n_tiles, g)
    from mmsae.models.llava import anyres_canvas, best_resolution

    h, w = (int(v) for v in enc.inputs["image_sizes"][0])
    canvas, _, bw = anyres_canvas(h, w, best_resolution(h, w, cfg.image_grid_pinpoints))
    npw = bw // cfg.vision_config.image_size
    tile = tags[:, :, 0].long() - 1
    glob = torch.stack([(tile // npw) * g + tags[:, :, 1], (tile % npw) * g + tags[:, :, 2]], -1)
    feats = torch.cat([torch.zeros(1, g * g, 2), glob[1:]])
    packed = a.model.model.pack_image_features([feats], enc.inputs["image_sizes"], torch.full((2,), -7.0),
                                               "anyres_max_9")[0][0].numpy()
    rows = np.flatnonzero(table.image_index == 0)
    assert len(packed) == len(rows)
    hi = (table.modality[rows] == IMAGE) & (table.tile[rows] > 0)
    assert (table.modality[rows][packed[:, 0] == -7] == SPECIAL).all()
    # box centre in grid units (undo the canvas affine: u = (x - tx) / sx, grid = u / patch)
    box = table.box[rows][hi]
    p = cfg.vision_config.patch_size
    cu = ((box[:, 0] + box[:, 2]) / 2 - canvas.tx) / canvas.sx / p
    cv = ((box[:, 1] + box[:, 3]) / 2 - canvas.ty) / canvas.sy / p
    got = packed[hi] + 0.5  # a feature at cell k stands for the cell centre k + 0.5
    n_shrunk = len(np.unique(cv.round(3)))
    assert n_shrunk < 300 // 8  # it really was shrunk
    interior = (got[:, 0] > 1) & (got[:, 0] < got[:, 0].max() - 1) & (got[:, 1] > 1) & (got[:, 1] < got[:, 1].max() - 1)
    # boxes clipped at the image border shift their centres; compare where the box is unclipped
    unclipped = (box[:, 0] > 0) & (box[:, 1] > 0) & (box[:, 2] < 400) & (box[:, 3] < 300)
    sel = interior & unclipped
    assert sel.sum() > 10
    np.testing.assert_allclose(got[sel, 0], cv[sel], atol=1e-3)
    np.testing.assert_allclose(got[sel, 1], cu[sel], atol=1e-3)


def test_onevision_multi_image_sample_uses_single_views(adapter_of, marker_check):
    a = adapter_of("llava_onevision")
    imgs = [marker_image(90, 50, (0, 0, 30, 50)), marker_image(30, 60, (0, 10, 30, 60))]
    enc = a.encode([Prompt(imgs, "<image> <image> compare")])
    t = enc.tables[0]
    for i in (0, 1):
        sel = t.image_index == i
        assert (t.modality[sel] == IMAGE).sum() == 16 and (t.modality[sel] == SPECIAL).sum() == 1
    # each image padded to a square (centred) and seen once
    marker_check(t, _patch(a, enc, t), (0, 0, 30, 50), image_size=(90, 50), image_index=0)
    marker_check(t, _patch(a, enc, t), (0, 10, 30, 60), image_size=(30, 60), image_index=1)
    # the 30x60 image is padded left and right: the first and last column see only padding
    second = np.flatnonzero((t.image_index == 1) & (t.modality == IMAGE))
    assert np.isnan(t.box[second[0]]).all() and np.isnan(t.box[second[3]]).all()
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 1), hs[2])
