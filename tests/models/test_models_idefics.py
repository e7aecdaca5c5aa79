"""Idefics3 and SmolVLM: image splitting into tiles + a global view, pixel-shuffled tokens, row/col
tags. The SmolVLM checkpoint names SmolVLMProcessor (num2words + torchvision): the adapter builds an
equivalent Idefics3Processor from its saved parts."""

import numpy as np
import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


def _idefics_patch(adapter, enc, table):
    ip = adapter.processor.image_processor
    cfg = adapter.model.config
    step = cfg.vision_config.patch_size * cfg.scale_factor
    pv = enc.inputs["pixel_values"].numpy()[0]  # one sample, one image: frames = tiles..., global
    n_tiles = int(table.tile.max())

    def patch(pos):
        t, r, c = table.tile[pos], table.patch_row[pos], table.patch_col[pos]
        frame = n_tiles if t == 0 else t - 1
        return unnormalize(pv[frame, :, r * step:(r + 1) * step, c * step:(c + 1) * step], ip)

    return patch


@pytest.mark.parametrize("size,marker", [((90, 50), (40, 0, 90, 50)), ((50, 120), (0, 20, 50, 90)),
                                         ((20, 20), (0, 0, 20, 12)), ((300, 200), (0, 0, 200, 200))])
@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_idefics_marker_lands_on_tile_and_global_tokens(adapter_of, marker_check, size, marker, family):
    a = adapter_of(family)
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe the image")])
    table = enc.tables[0]
    marker_check(table, _idefics_patch(a, enc, table), marker, image_size=size)
    cx, cy = (marker[0] + marker[2]) / 2, (marker[1] + marker[3]) / 2
    tiles = sorted(table.tile[table.covering(cx, cy)])
    split = table.tile.max() > 0
    assert tiles[0] == 0 and len(tiles) == (2 if split else 1)  # global view + one tile
    # row/col tags and <fake_token_around_image> are special tokens, not text
    ids = enc.inputs["input_ids"][0].numpy()
    fake = a.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    assert (table.modality[ids == fake] == SPECIAL).all()
    if split:
        tag = a.tokenizer.convert_tokens_to_ids("<row_1_col_1>")
        assert table.modality[list(ids).index(tag)] == SPECIAL


def test_idefics_capture(adapter_of):
    a = adapter_of("idefics3")
    enc = a.encode([Prompt([marker_image(90, 50, (0, 0, 9, 9))], "red"), Prompt([], "what colour")])
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 0), hs[1])
    assert (enc.tables[0].modality == IMAGE).sum() == 7 * 4 and np.isnan(enc.tables[1].box).all()


def test_idefics_token_order_matches_the_models_pixel_shuffle(adapter_of):
    """Patches tagged with their (row, col) go through the model's own pixel_shuffle: token k must
    hold exactly the s x s patches of the block the table gives it."""
    a = adapter_of("idefics3")
    cfg = a.model.config
    g = cfg.vision_config.image_size // cfg.vision_config.patch_size
    s = cfg.scale_factor
    r, c = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
    x = torch.stack([r, c], -1).reshape(1, g * g, 2).float()
    shuffled = a.model.model.connector.pixel_shuffle(x, s)[0].reshape(-1, s * s, 2)
    toks = a.image_tokens(marker_image(20, 20, (0, 0, 1, 1)), 0, {})
    toks = toks.take(toks.tile == 0)  # every frame (tile or global) has the same layout
    assert len(toks.patch_row) == len(shuffled)
    for k in range(len(shuffled)):
        assert set((shuffled[k, :, 0] // s).tolist()) == {toks.patch_row[k]}
        assert set((shuffled[k, :, 1] // s).tolist()) == {toks.patch_col[k]}


def test_smolvlm_processor_rebuilt_from_parts(adapter_of):
    a = adapter_of("smolvlm")
    assert a.family == "idefics3" and a.model.config.model_type == "smolvlm"
    assert type(a.processor.image_processor).__name__ == "SmolVLMImageProcessorPil"
