"""Chameleon: VQ code grid on a centre crop; image tokens carry their real VQ code ids."""

import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, Prompt


@pytest.mark.parametrize("size,marker", [((90, 50), (30, 10, 70, 45)), ((32, 32), (8, 8, 24, 24))])
def test_chameleon_marker_on_vq_grid(adapter_of, marker_check, size, marker):
    a = adapter_of("chameleon")
    enc = a.encode([Prompt([marker_image(*size, marker)], "describe the image")])
    table = enc.tables[0]
    pv = enc.inputs["pixel_values"].numpy()
    step = pv.shape[-1] // round(a.processor.image_seq_length ** 0.5)
    ip = a.processor.image_processor

    def patch(pos):
        r, c = table.patch_row[pos], table.patch_col[pos]
        return unnormalize(pv[table.image_index[pos], :, r * step:(r + 1) * step, c * step:(c + 1) * step], ip)

    marker_check(table, patch, marker, image_size=size, min_tokens=4)


def test_chameleon_table_holds_vq_codes_and_capture(adapter_of):
    a = adapter_of("chameleon")
    enc = a.encode([Prompt([marker_image(40, 40, (0, 0, 20, 20))], "red"), Prompt([], "what colour")])
    t = enc.tables[0]
    img = t.modality == IMAGE
    codes = a.model.model.get_image_tokens(enc.inputs["pixel_values"])[0].numpy()
    assert (t.token_id[img] == codes).all()
    names = {v: k for k, v in a.tokenizer.get_vocab().items()}
    assert all(names[int(i)].startswith("IMGIMG") for i in t.token_id[img])
    first, last = img.nonzero()[0][[0, -1]]
    assert t.modality[first - 1] == SPECIAL and t.modality[last + 1] == SPECIAL  # <racm3:break> ... <eoss>
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    torch.testing.assert_close(a.capture(enc.inputs, 1), hs[2])
