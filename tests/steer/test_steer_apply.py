"""`steering` in full forwards: no-ops are bit-identical, each intervention is the algebra it names,
token sets pick their columns (special tokens only with steer_special), per-example steering equals
one-by-one steering, grad-enabled forwards differentiate through it."""

import pytest
import torch
from steer_helpers import FAMILIES, image_prompts, prompts

from mmsae.models import IMAGE, SPECIAL, TEXT
from mmsae.steer import Add, AddVector, Clamp, Scale, steering

LAYER = 1


def _record(adapter, layer, inputs, ctx=None):
    """(hidden_BSD at the output of `layer` after any steering, logits_BSV)."""
    box = {}

    def fn(h, site):
        box["h"] = h.detach().clone()
        return h

    with ctx if ctx is not None else torch.no_grad(), adapter.intervene(layer, fn):
        logits = adapter.forward_logits(inputs)
    return box["h"], logits


def _modality(enc):
    return torch.stack([torch.from_numpy(t.modality.astype("int64")) for t in enc.tables])


def _dense_codes(sae, x_ND):
    return sae.encode(x_ND.float()).to_dense()


@pytest.mark.parametrize("family", FAMILIES)
def test_noop_interventions_are_bit_identical(adapter_of, sae_of, family):
    a, sae = adapter_of(family), sae_of(family)
    enc = a.encode(prompts(2))
    clean_h, clean = _record(a, LAYER, enc.inputs)
    mod_BS = _modality(enc)
    z_BSF = _dense_codes(sae, clean_h.reshape(-1, a.d_model)).reshape(*clean_h.shape[:2], -1)
    real_BS = (mod_BS == TEXT) | (mod_BS == IMAGE)
    # a feature that is inactive somewhere and active somewhere: clamp it to 0 where inactive
    j = next(f for f in range(z_BSF.shape[-1]) if 0 < int((z_BSF[..., f][real_BS] > 0).sum()) < int(real_BS.sum()))
    inactive_BS = real_BS & (z_BSF[..., j] == 0)
    ops = [Add(3, 0.0), Scale(j, 1.0), Clamp(j, 0.0, tokens=inactive_BS), AddVector(torch.zeros(a.d_model))]
    with steering(a, sae, LAYER, ops, enc):
        assert torch.equal(a.forward_logits(enc.inputs), clean)
        logits_grad = a.forward_logits(enc.inputs, grad=True)
    assert torch.equal(logits_grad.detach(), clean)
    # clamping a feature to the value it has (computed as the hook computes it, on the same row)
    b, s = divmod(int((z_BSF[..., j] * real_BS).reshape(-1).argmax()), z_BSF.shape[1])
    with torch.no_grad():
        value = float(sae.encode(clean_h[b, s][None].float()).to_dense()[0, j])
    assert value > 0
    one_BS = torch.zeros_like(real_BS)
    one_BS[b, s] = True
    with steering(a, sae, LAYER, [Clamp(j, value, tokens=one_BS)], enc):
        assert torch.equal(a.forward_logits(enc.inputs), clean)
    with steering(a, sae, LAYER, [Clamp(j, value + 40.0, tokens=one_BS)], enc):
        assert not torch.equal(a.forward_logits(enc.inputs), clean)


def test_each_intervention_is_the_change_it_names(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    enc = a.encode(image_prompts(1))
    clean_h, _ = _record(a, LAYER, enc.inputs)
    mod_S = _modality(enc)[0]
    rows = (mod_S == TEXT) | (mod_S == IMAGE)
    x_ND = clean_h[0][rows]
    z_NF = _dense_codes(sae, x_ND)
    d = sae.W_dec.detach()
    j = int(z_NF.gt(0).sum(0).argmax())  # the feature most often active
    v_D = torch.randn(a.d_model, generator=torch.Generator().manual_seed(2))
    expect = {
        "clamp": (Clamp(j, 3.0, tokens="prompt"), (3.0 - z_NF[:, j])[:, None] * d[j]),
        "scale": (Scale(j, 2.5, tokens="prompt"), (1.5 * z_NF[:, j])[:, None] * d[j]),
        "add": (Add(j, 0.7, tokens="prompt"), 0.7 * d[j].expand_as(x_ND)),
        "vector": (AddVector(v_D, tokens="prompt"), v_D.expand_as(x_ND)),
    }
    for name, (op, delta_ND) in expect.items():
        h, _ = _record(a, LAYER, enc.inputs, steering(a, sae, LAYER, [op], enc))
        assert torch.allclose(h[0][rows] - x_ND, delta_ND, atol=1e-5), name
        assert torch.equal(h[0][~rows], clean_h[0][~rows]), name  # BOS untouched
    # in order, on one feature: clamp then scale then add = ((3·2) + 1)
    ops = [Clamp(j, 3.0, tokens="prompt"), Scale(j, 2.0, tokens="prompt"), Add(j, 1.0, tokens="prompt")]
    h, _ = _record(a, LAYER, enc.inputs, steering(a, sae, LAYER, ops, enc))
    assert torch.allclose(h[0][rows] - x_ND, (7.0 - z_NF[:, j])[:, None] * d[j], atol=1e-5)
    # keep_error=False: the steered reconstruction replaces x on the steered tokens
    xhat_ND = sae.decode(sae.encode(x_ND.float()))
    h, _ = _record(a, LAYER, enc.inputs, steering(a, sae, LAYER, [Add(j, 0.0, tokens="prompt")], enc, keep_error=False))
    assert torch.allclose(h[0][rows], xhat_ND, atol=1e-5) and not torch.allclose(h[0][rows], x_ND, atol=1e-3)
    h, _ = _record(a, LAYER, enc.inputs, steering(a, sae, LAYER, [Clamp(j, 3.0, tokens="prompt")], enc, keep_error=False))
    assert torch.allclose(h[0][rows], xhat_ND + (3.0 - z_NF[:, j])[:, None] * d[j], atol=1e-5)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3"])
def test_token_sets_steer_exactly_their_columns(adapter_of, sae_of, family):
    a, sae = adapter_of(family), sae_of(family)
    enc = a.encode(prompts(2))  # right padding: example 1 (text only, shorter) is padded
    clean_h, _ = _record(a, LAYER, enc.inputs)
    mod_BS = _modality(enc)
    pad_BS = enc.inputs["attention_mask"] == 0
    assert bool(pad_BS.any()) and bool((mod_BS == SPECIAL).any())
    image_BS, text_BS = mod_BS == IMAGE, mod_BS == TEXT
    special_BS = (mod_BS == SPECIAL) & ~pad_BS
    custom_BS = torch.zeros_like(image_BS)
    custom_BS[0, :4] = custom_BS[1, -3:] = True  # covers BOS of example 0 and padding of example 1
    cases = [("image", False, image_BS), ("text", False, text_BS), ("prompt", False, image_BS | text_BS),
             ("all", False, image_BS | text_BS), ("generated", False, torch.zeros_like(image_BS)),
             ("text", True, text_BS | special_BS), ("all", True, image_BS | text_BS | special_BS),
             (custom_BS, False, custom_BS & (image_BS | text_BS)), (custom_BS, True, custom_BS)]
    for tokens, special, want_BS in cases:
        h, _ = _record(a, LAYER, enc.inputs, steering(a, sae, LAYER, [Add(9, 1.5, tokens=tokens)], enc, steer_special=special))
        changed_BS = (h != clean_h).any(-1)
        assert torch.equal(changed_BS, want_BS), (tokens if isinstance(tokens, str) else "mask", special)


def test_big_add_changes_the_prediction_and_image_steering_reaches_the_text(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    enc = a.encode(image_prompts(2))
    _, clean = _record(a, LAYER, enc.inputs)
    for j in (3, 9, 17):
        with steering(a, sae, LAYER, [Add(j, 50.0)], enc):
            steered = a.forward_logits(enc.inputs)
        assert not torch.equal(steered[:, -1].argmax(-1), clean[:, -1].argmax(-1)), j
    # steering only the image changes the last (text) position's logits through attention
    with steering(a, sae, LAYER, [Clamp(9, 25.0, tokens="image")], enc):
        steered = a.forward_logits(enc.inputs)
    assert (steered[:, -1] - clean[:, -1]).abs().max() > 1e-3


def test_per_example_interventions_equal_one_by_one(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    ps = prompts(3)
    push_D = torch.randn(a.d_model, generator=torch.Generator().manual_seed(4))
    per = [[Clamp(9, 8.0, tokens="image"), Scale(3, 0.0)], [], [Add(17, 2.0, tokens="text"), AddVector(push_D)]]
    enc = a.encode(ps)  # right padding: every real position equals its unpadded run
    with steering(a, sae, LAYER, per, enc):
        batch = a.forward_logits(enc.inputs)
    for b, p in enumerate(ps):
        one = a.encode([p])
        with steering(a, sae, LAYER, per[b], one) if per[b] else torch.no_grad():
            alone = a.forward_logits(one.inputs)
        n = one.inputs["input_ids"].shape[1]
        assert torch.allclose(batch[b, :n], alone[0], atol=1e-5), b
    with steering(a, sae, LAYER, per[::-1], enc):
        assert not torch.allclose(a.forward_logits(enc.inputs)[0], batch[0], atol=1e-3)


def test_grad_flows_to_the_residual_and_not_into_the_sae(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    enc = a.encode(image_prompts(1))
    flags = [p.requires_grad for p in sae.parameters()]
    box = {}

    def leaf(h, site):
        box["x"] = x = h.detach().requires_grad_(True)
        return x

    with a.intervene(LAYER, leaf), steering(a, sae, LAYER, [Clamp(9, 5.0, tokens="image"), Scale(3, 2.0)], enc):
        logits = a.forward_logits(enc.inputs, grad=True)
        assert not any(p.requires_grad for p in sae.parameters())
    (g,) = torch.autograd.grad(logits[0, -1, 5] - logits[0, -1, 7], box["x"])
    assert g.shape == box["x"].shape and bool(g[0, -1].abs().sum() > 0)
    assert [p.requires_grad for p in sae.parameters()] == flags and all(p.grad is None for p in sae.parameters())
