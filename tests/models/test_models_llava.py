"""LLaVA-1.5 (the zoo's subject architecture): token table geometry, capture, replace, early exit."""

import numpy as np
import pytest
import torch
from geometry_checks import marker_image, unnormalize

from mmsae.models import IMAGE, SPECIAL, TEXT, AdapterError, Prompt, load_adapter


def _llava_patch(adapter, enc, table):
    p = adapter.patch_size
    ip = adapter.processor.image_processor
    pv = enc.inputs["pixel_values"].numpy()

    def patch(pos):
        r, c = table.patch_row[pos], table.patch_col[pos]
        return unnormalize(pv[table.image_index[pos], :, r * p:(r + 1) * p, c * p:(c + 1) * p], ip)

    return patch


@pytest.mark.parametrize("size,marker", [((50, 40), (14, 8, 42, 36)), ((40, 90), (4, 30, 36, 62)),
                                         ((32, 32), (0, 0, 20, 20))])
def test_llava_marker_lands_on_the_covering_tokens(adapter_of, marker_check, size, marker):
    a = adapter_of("llava")
    image = marker_image(*size, marker)
    enc = a.encode([Prompt([image], "describe the image")])
    table = enc.tables[0]
    marker_check(table, _llava_patch(a, enc, table), marker)
    cx, cy = (marker[0] + marker[2]) / 2, (marker[1] + marker[3]) / 2
    assert len(table.covering(cx, cy)) == 1  # one base view: exactly one token per visible pixel


def test_llava_marker_on_real_photo(adapter_of, marker_check):
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    a = adapter_of("llava")
    photo = Image.fromarray(skdata.chelsea())  # 451x300 real photo
    marker = (150, 40, 330, 250)
    image = marker_image(451, 300, marker, base=photo)
    enc = a.encode([Prompt([image], "")])
    table = enc.tables[0]
    marker_check(table, _llava_patch(a, enc, table), marker, min_tokens=2)
    # centre crop: the left and right strips of a landscape photo are not seen by any token
    assert len(table.covering(5, 150)) == 0 and len(table.covering(225, 150)) == 1


def test_llava_table_modalities_and_batch(adapter_of):
    a = adapter_of("llava")
    img = marker_image(48, 48, (0, 0, 8, 8))
    enc = a.encode([Prompt([img, img], "<image> left <image> right"), Prompt([], "what colour")])
    t0, t1 = enc.tables
    assert len(t0) == len(t1) == enc.inputs["input_ids"].shape[1]
    assert t0.modality[0] == SPECIAL  # BOS
    assert (t0.modality == IMAGE).sum() == 2 * 16
    assert set(t0.image_index[t0.modality == IMAGE]) == {0, 1}
    assert list(t0.modality) == [SPECIAL] + [IMAGE] * 16 + [TEXT] + [IMAGE] * 16 + [TEXT]
    # the text-only sequence is right-padded: padding rows are marked special, positions count from 0
    mask = enc.inputs["attention_mask"][1].numpy().astype(bool)
    assert (t1.modality[~mask] == SPECIAL).all() and (t1.modality[1:3] == TEXT).all()
    assert t1.position[0] == 0 and (t1.image_index == -1).all()
    assert np.isnan(t1.box).all()


def test_llava_placeholder_count_mismatch_is_an_error(adapter_of):
    a = adapter_of("llava")
    with pytest.raises(AdapterError):
        a.encode([Prompt([], "<image> no image given")])


def test_capture_equals_hidden_states_at_every_layer(adapter_of):
    a = adapter_of("llava")
    enc = a.encode([Prompt([marker_image(40, 40, (0, 0, 9, 9))], "a red square"), Prompt([], "what shape")])
    with torch.no_grad():
        hs = a.model(**enc.inputs, output_hidden_states=True).hidden_states
    for layer in range(a.n_layers - 1):  # the last entry of hidden_states has the final norm applied
        acts_BSD = a.capture(enc.inputs, layer)
        assert acts_BSD.shape == (2, enc.inputs["input_ids"].shape[1], a.d_model)
        torch.testing.assert_close(acts_BSD, hs[layer + 1])
    last = a.capture(enc.inputs, a.n_layers - 1)
    norm = a.model.model.language_model.norm
    torch.testing.assert_close(norm(last), hs[-1])


def test_early_exit_runs_no_block_after_layer(adapter_of):
    a = adapter_of("llava")
    enc = a.encode([Prompt([], "describe the image")])
    before = [dict(b._forward_hooks) for b in a.decoder_layers()]
    calls = []
    handles = [blk.register_forward_pre_hook(lambda m, args, i=i: calls.append(i))
               for i, blk in enumerate(a.decoder_layers())]
    head = a.model.lm_head.register_forward_pre_hook(lambda m, args: calls.append("head"))
    try:
        a.capture(enc.inputs, 1)
        assert calls == [0, 1]
        calls.clear()
        a.capture(enc.inputs, 1, early_exit=False)
        assert calls == [0, 1, 2, 3, "head"]
    finally:
        for h in handles + [head]:
            h.remove()
    # hooks are removed after an early exit: a normal forward afterwards is unaffected
    assert [dict(b._forward_hooks) for b in a.decoder_layers()] == before


def test_replace_changes_downstream_and_capture_sees_it(adapter_of):
    a = adapter_of("llava")
    enc = a.encode([Prompt([marker_image(40, 40, (0, 0, 9, 9))], "a red square")])
    with torch.no_grad():
        clean = a.model(**enc.inputs).logits
    with a.replace(1, lambda x_BSD: x_BSD), torch.no_grad():
        same = a.model(**enc.inputs).logits
    torch.testing.assert_close(same, clean)
    with a.replace(1, lambda x_BSD: x_BSD * 0):
        zeroed = a.capture(enc.inputs, 1)
        later = a.capture(enc.inputs, 2)
        with torch.no_grad():
            changed = a.model(**enc.inputs).logits
    assert zeroed.abs().max() == 0
    assert not torch.allclose(changed, clean)
    assert not torch.allclose(later, a.capture(enc.inputs, 2))  # hook gone after the block
    with pytest.raises(ValueError):
        with a.replace(1, lambda x_BSD: x_BSD[:, :1]), torch.no_grad():
            a.model(**enc.inputs)


def test_replace_inside_generate_with_kv_cache(adapter_of):
    a = adapter_of("llava")
    enc = a.encode([Prompt([marker_image(40, 40, (0, 0, 9, 9))], "a red square")])
    S = enc.inputs["input_ids"].shape[1]
    kw = dict(max_new_tokens=4, do_sample=False, use_cache=True, min_new_tokens=4)
    clean = a.generate(enc.inputs, **kw)
    seen = []
    push = torch.randn(a.d_model) * 50

    def steer(x_BSD):
        seen.append(x_BSD.shape[1])
        return x_BSD + push

    with a.replace(2, steer):
        steered = a.generate(enc.inputs, **kw)
    assert seen[0] == S and seen[1:] == [1, 1, 1]  # prefill, then one new position per step
    assert not torch.equal(steered, clean)
    with a.replace(2, lambda x_BSD: x_BSD):
        assert torch.equal(a.generate(enc.inputs, **kw), clean)


def test_layer_out_of_range_and_unknown_family(adapter_of, tmp_path):
    a = adapter_of("llava")
    enc = a.encode([Prompt([], "red")])
    for bad in (-1, a.n_layers, 99):
        with pytest.raises(AdapterError, match="out of range"):
            a.capture(enc.inputs, bad)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(AdapterError, match="no adapter"):
        load_adapter(tmp_path)
    with pytest.raises(AdapterError, match="not a model directory"):
        load_adapter(tmp_path / "nowhere")
