"""The intervention API: positions of each call, every cached decoding step edited (== full
recomputation), grad-enabled forwards, masked edits, on several families and attention kernels."""

import pytest
import torch
from PIL import Image

from mmsae.models import Prompt
from mmsae.models.intervene import Site, leaf, record, where, zero_ablation

FAMILIES = ["llava", "qwen2_vl", "gemma3"]


def _enc(a, n=1):
    prompts = [Prompt([Image.new("RGB", (40, 30), c)], t) for c, t in [("red", "what colour"), ("blue", "the shape is")][:n]]
    return a.encode(prompts, padding_side="left")


def _push(a, seed=0):
    return torch.randn(a.d_model, generator=torch.Generator().manual_seed(seed))


def _column_edit(a, width):
    """Adds a push whose size depends on the absolute column: wrong positions give wrong outputs."""
    push = _push(a)

    def fn(h_BSD, site: Site):
        scale = torch.tensor([(c % 5) / 2.0 if c >= width - 3 else 0.0 for c in site.cols], dtype=h_BSD.dtype)
        return h_BSD + scale[None, :, None].to(h_BSD.device) * push.to(h_BSD.device)

    return fn


@pytest.fixture(params=["eager", "sdpa"])
def attn(request):
    return request.param


def _with_attn(a, attn):
    a.model.set_attn_implementation(attn)
    return a


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_edits_every_step_at_its_column_and_matches_full_recomputation(adapter_of, family, attn):
    a = _with_attn(adapter_of(family), attn)
    enc = _enc(a, 2)
    width = enc.inputs["input_ids"].shape[1]
    sites = []
    fn = _column_edit(a, width)

    def logged(h, site):
        sites.append((site.start, site.stop, site.step))
        return fn(h, site)

    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False)
    with a.intervene(1, logged):
        ids = a.generate(enc.inputs, **kw)
    assert sites == [(0, width, 0)] + [(width + i, width + i + 1, i + 1) for i in range(3)]
    # step by step: the whole sequence so far, no cache, the same column-dependent edit
    inputs = {k: v for k, v in enc.inputs.items()}
    cur = enc.inputs["input_ids"]
    for _ in range(4):
        inputs["input_ids"] = cur
        inputs["attention_mask"] = torch.cat([enc.inputs["attention_mask"], torch.ones(cur.shape[0], cur.shape[1] - width, dtype=torch.long)], 1)
        if "mm_token_type_ids" in enc.inputs or "token_type_ids" in enc.inputs:
            for k in ("mm_token_type_ids", "token_type_ids"):
                if k in enc.inputs:
                    inputs[k] = torch.cat([enc.inputs[k], torch.zeros(cur.shape[0], cur.shape[1] - width, dtype=enc.inputs[k].dtype)], 1)
        with a.intervene(1, fn):
            logits = a.forward_logits(inputs)
        cur = torch.cat([cur, logits[:, -1].argmax(-1, keepdim=True).cpu()], 1)
    assert torch.equal(ids.cpu(), cur)


@pytest.mark.parametrize("family", FAMILIES)
def test_identity_edit_is_bit_identical_and_masked_edits_touch_only_their_positions(adapter_of, family):
    a = adapter_of(family)
    enc = _enc(a, 2)
    clean = a.forward_logits(enc.inputs)
    with a.intervene(2, lambda h, site: h):
        same = a.forward_logits(enc.inputs)
    assert torch.equal(clean, same)
    box = {}
    with a.intervene(2, record(box)):
        a.forward_logits(enc.inputs)
    mask = torch.zeros(enc.inputs["input_ids"].shape, dtype=torch.bool)
    mask[0, -2] = True
    out = {}

    def after(h, site):
        out["h"] = h
        return h

    with a.intervene(2, zero_ablation(mask)), a.intervene(2, after):
        hit = a.forward_logits(enc.inputs)
    assert torch.equal(out["h"][~mask], box["acts"][~mask]) and bool((out["h"][mask] == 0).all())
    assert torch.equal(hit[1], clean[1]) and torch.equal(hit[0, :-2], clean[0, :-2])  # causal: earlier rows unchanged
    assert not torch.equal(hit[0, -1], clean[0, -1])


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_enabled_forward_differentiates_the_residual_only(adapter_of, family):
    a = adapter_of(family)
    enc = _enc(a)
    box = {}
    with a.intervene(1, leaf(box)):
        logits = a.forward_logits(enc.inputs, grad=True)
    d = logits[0, -1, 5] - logits[0, -1, 7]
    (g,) = torch.autograd.grad(d, box["x"])
    assert g.shape == box["x"].shape and bool(g[0, -1].abs().sum() > 0)
    assert all(p.requires_grad and p.grad is None for p in a.model.parameters())
    # the gradient predicts a small change of the residual at the last position
    v = torch.zeros_like(box["x"])
    v[0, -1] = _push(a, 3) * 1e-3
    with a.intervene(1, lambda h, site: h + v):
        bumped = a.forward_logits(enc.inputs)
    clean = a.forward_logits(enc.inputs)
    exact = float((bumped[0, -1, 5] - bumped[0, -1, 7]) - (clean[0, -1, 5] - clean[0, -1, 7]))
    assert exact == pytest.approx(float((g * v).sum()), rel=0.05, abs=1e-6)


def test_where_replaces_only_masked_columns_and_ignores_columns_past_the_mask():
    h = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False], [False, True]])
    out = where(mask, lambda x: x + 1)(h, Site(1, 4, 1))
    expect = h.clone()
    expect[1, 0] += 1  # column 1 of example 1
    assert torch.equal(out, expect)


def test_an_intervention_leaves_another_threads_forward_alone(adapter_of):
    """Harvest runs forwards of one model side by side in threads; an intervention applies to the
    forwards of the thread that opened it only."""
    import threading

    a = adapter_of("llava")
    enc = _enc(a, 2)
    clean = a.forward_logits(enc.inputs)
    push = _push(a)
    got = {}
    with a.intervene(1, lambda h, site: h + push):
        steered = a.forward_logits(enc.inputs)
        other = threading.Thread(target=lambda: got.__setitem__("other", a.forward_logits(enc.inputs)))
        other.start()
        other.join()
    assert not torch.equal(steered, clean)
    assert torch.equal(got["other"], clean)
