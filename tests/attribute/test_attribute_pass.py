"""The one-pass attribution: values against an independent gradient, a finite difference, sums of the
views, one forward and one backward, batch independence, integrated gradients."""

import numpy as np
import pytest
import torch
from attribute_helpers import FAMILIES, LAYER, first_cols, logit_diff, make_sae, prompts, reference, token_id

from mmsae.attribute import ERROR, attribute
from mmsae.models import load_adapter


def _rows(attr, b):
    t = attr.table().to_pydict()
    sel = np.asarray(t["example"]) == b
    return {k: np.asarray(v)[sel] for k, v in t.items()}


@pytest.mark.parametrize("family,kind", [(f, "topk") for f in FAMILIES] + [("llava", "relu"), ("llava", "jumprelu")])
def test_rows_equal_an_independent_gradient_for_every_active_feature_and_every_error_term(adapter_of, family, kind):
    a = adapter_of(family)
    sae = make_sae(a.d_model, kind)
    enc = a.encode(prompts(2))
    attr = attribute(a, sae, LAYER, enc, "red", "blue")
    d_B, z_BSF, ref_BSF, err_BS = reference(a, sae, LAYER, enc)
    np.testing.assert_allclose(attr.metric, d_B.numpy(), rtol=1e-5, atol=1e-6)
    mask = enc.inputs["attention_mask"].bool()
    for b, first in enumerate(first_cols(enc)):
        r = _rows(attr, b)
        cols = r["position"] + first
        feat = r["feature"] >= 0
        want = np.where(feat, ref_BSF[b, cols, np.where(feat, r["feature"], 0)].numpy(), err_BS[b, cols].numpy())
        np.testing.assert_allclose(r["attribution"], want, rtol=1e-4, atol=1e-6)
        # every active latent of every real position has its row, and nothing else does
        assert feat.sum() == int((z_BSF[b][mask[b]] != 0).sum())
        assert bool((z_BSF[b, cols[feat], r["feature"][feat]] != 0).all())
        # one error row per real position
        err_pos = np.sort(r["position"][~feat])
        np.testing.assert_array_equal(err_pos, np.arange(int(mask[b].sum())))


def test_attribution_matches_a_finite_difference_of_scaling_one_feature(tiny_dir):
    a = load_adapter(tiny_dir("llava"), dtype=torch.float64)
    sae = make_sae(a.d_model, dtype="float64")
    enc = a.encode(prompts(1))
    attr = attribute(a, sae, LAYER, enc, "red", "blue")
    per = attr.per_feature(0).to_pydict()
    _, z_BSF, _, _ = reference(a, sae, LAYER, enc)
    checked = 0
    for f, value in zip(per["feature"], per["attribution"]):
        if f == ERROR:
            continue
        push_SD = z_BSF[0, :, f, None] * sae.W_dec[f].detach()[None, :]

        def d_at(eps):
            with a.intervene(LAYER, lambda h, site: h - eps * push_SD[None]):
                logits = a.forward_logits(enc.inputs)
            return float(logits[0, -1, token_id(a, "red")] - logits[0, -1, token_id(a, "blue")])

        # z scaled by (1 ∓ ε): central differences, Richardson-extrapolated (error O(ε⁴)) because RMSNorm
        # computes in float32 even in a float64 model, which rules out a tiny ε
        central = [(d_at(eps) - d_at(-eps)) / (2 * eps) for eps in (1e-2, 5e-3)]
        fd = (4 * central[1] - central[0]) / 3
        assert fd == pytest.approx(value, rel=2e-4, abs=1e-6)
        checked += 1
        if checked == 3:
            break
    assert checked == 3


def test_views_sum_to_the_table(adapter_of):
    a = adapter_of("llava")
    attr = attribute(a, make_sae(a.d_model), LAYER, a.encode(prompts(2)), "red", "blue")
    t = attr.table().to_pydict()
    ex, fe, at = (np.asarray(t[k]) for k in ("example", "feature", "attribution"))
    mod = np.asarray(t["modality"])
    for example in (0, 1, None):
        sel = np.ones(len(ex), bool) if example is None else ex == example
        per = attr.per_feature(example).to_pydict()
        for f, v in zip(per["feature"], per["attribution"]):
            assert v == pytest.approx(at[sel & (fe == f)].sum(), abs=1e-12)
        assert set(per["feature"]) == set(fe[sel].tolist())
        share = attr.modality_share(example)
        assert sum(share.values()) == pytest.approx(1.0)
        total = np.abs(at[sel]).sum()
        assert share["error"] == pytest.approx(np.abs(at[sel & (fe == ERROR)]).sum() / total)
        assert share["image"] == pytest.approx(np.abs(at[sel & (fe != ERROR) & (mod == "image")]).sum() / total)
        assert share["image"] > 0 and share["text"] > 0
    pos = attr.per_position(1).to_pydict()
    sel = ex == 1
    for p, tot, err in zip(pos["position"], pos["total"], pos["error"]):
        here = sel & (np.asarray(t["position"]) == p)
        assert tot == pytest.approx(at[here].sum(), abs=1e-12)
        assert err == pytest.approx(at[here & (fe == ERROR)].sum(), abs=1e-12)
    assert pos["token"][0] == "<s>" and pos["modality"][0] == "special"


def test_one_forward_and_one_backward_do_every_feature(adapter_of, monkeypatch):
    a = adapter_of("qwen2_vl")
    sae = make_sae(a.d_model)
    enc = a.encode(prompts(2))
    forwards, grads = [], []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        grads.append(1)
        return real_grad(*args, **kwargs)

    def no_backward(*args, **kwargs):
        raise AssertionError("attribution must use one autograd.grad, not Tensor.backward")

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    monkeypatch.setattr(torch.Tensor, "backward", no_backward)
    handle = a.model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        attr = attribute(a, sae, LAYER, enc, "red", "blue")
        assert (len(forwards), len(grads)) == (1, 1)
        n_real = int(enc.inputs["attention_mask"].sum())
        assert attr.table().num_rows > 4 * n_real  # many (feature, position) rows came out of that one pass
        forwards.clear(), grads.clear()
        attribute(a, sae, LAYER, enc, "red", "blue", exact_top=5, exact_batch=8)
        assert (len(forwards), len(grads)) == (2, 1)  # the 5 reruns of both examples in one batch
        forwards.clear(), grads.clear()
        attribute(a, sae, LAYER, enc, "red", "blue", exact_top=5, exact_batch=2)
        assert (len(forwards), len(grads)) == (4, 1)
        forwards.clear(), grads.clear()
        attribute(a, sae, LAYER, enc, "red", "blue", ig_steps=3)
        assert (len(forwards), len(grads)) == (3, 3)
    finally:
        handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_of_two_equals_each_example_alone(adapter_of, family):
    a = adapter_of(family)
    sae = make_sae(a.d_model)
    both = attribute(a, sae, LAYER, a.encode(prompts(2)), ["red", "yellow"], "blue", exact_top=3)
    assert a.encode(prompts(2)).inputs["attention_mask"].sum(1).unique().numel() == 2  # really padded
    for b, p in enumerate(prompts(2)):
        alone = attribute(a, sae, LAYER, a.encode([p]), ["red", "yellow"][b], "blue", exact_top=3)
        rb, ra = _rows(both, b), _rows(alone, 0)
        ob = np.lexsort((rb["feature"], rb["position"]))
        oa = np.lexsort((ra["feature"], ra["position"]))
        for k in ("feature", "position", "modality", "token"):
            np.testing.assert_array_equal(rb[k][ob], ra[k][oa])
        np.testing.assert_allclose(rb["attribution"][ob], ra["attribution"][oa], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(rb["exact_effect"][ob], ra["exact_effect"][oa], rtol=1e-3, atol=1e-5)
        assert both.metric[b] == pytest.approx(alone.metric[0], rel=1e-5, abs=1e-6)


def test_the_default_read_position_is_the_last_real_token_on_either_padding_side(adapter_of):
    a = adapter_of("llava")
    sae = make_sae(a.d_model)
    for side in ("left", "right"):
        enc = a.encode(prompts(2), padding_side=side)
        attr = attribute(a, sae, LAYER, enc, "red", "blue", metric="logit_diff")
        n_real = enc.inputs["attention_mask"].sum(1).numpy()
        np.testing.assert_array_equal(attr.read_position, n_real - 1)
        # positions after the read-out have no effect (causal), and padding has no rows
        for b in range(2):
            r = _rows(attr, b)
            assert r["position"].max() == n_real[b] - 1
    same = attribute(a, sae, LAYER, enc, "red", "blue", position=[-1, int(n_real[1]) - 1])
    np.testing.assert_allclose(same.attribution_R, attr.attribution_R)
    early = attribute(a, sae, LAYER, enc, "red", "blue", position=3)
    r = _rows(early, 0)
    assert np.all(r["attribution"][r["position"] > 3] == 0)
    assert np.abs(r["attribution"][r["position"] <= 3]).sum() > 0


def test_logprob_metric_is_log_p_of_the_target(adapter_of):
    a = adapter_of("gemma3")
    enc = a.encode(prompts(1))
    attr = attribute(a, make_sae(a.d_model), LAYER, enc, "red", metric="logprob")
    logits = a.forward_logits(enc.inputs)[0, -1].float()
    assert attr.metric[0] == pytest.approx(float(torch.log_softmax(logits, -1)[token_id(a, "red")]), abs=1e-5)
    assert attr.baseline is None


def test_integrated_gradients(tiny_dir, adapter_of):
    a = adapter_of("llava")
    sae = make_sae(a.d_model)
    enc = a.encode(prompts(1))
    plain = attribute(a, sae, LAYER, enc, "red", "blue")
    one = attribute(a, sae, LAYER, enc, "red", "blue", ig_steps=1)
    np.testing.assert_array_equal(one.attribution_R, plain.attribution_R)
    # completeness: the rows sum to d(x = b_dec at every position) − d(clean) as the steps grow (the
    # right Riemann sum converges as 1/n; one gradient is far off on this model)
    a64 = load_adapter(tiny_dir("llava"), dtype=torch.float64)
    sae64 = make_sae(a64.d_model, dtype="float64")
    b_dec = sae64.b_dec.detach()
    with a64.intervene(LAYER, lambda h, site: b_dec.expand_as(h)):
        logits = a64.forward_logits(enc.inputs)
    d_zero = float(logits[0, -1, token_id(a, "red")] - logits[0, -1, token_id(a, "blue")])
    err = {}
    for n in (16, 64):
        ig = attribute(a64, sae64, LAYER, enc, "red", "blue", ig_steps=n)
        err[n] = abs(ig.attribution_R.sum() - (d_zero - float(ig.metric[0])))
    delta = abs(d_zero - float(ig.metric[0]))
    assert err[64] < 0.05 * delta and err[64] < err[16] / 3
    assert ig.ig_steps == 64 and ig.metric[0] == pytest.approx(plain.metric[0], abs=1e-4)


def test_a_bfloat16_model_runs_its_clean_forward_under_the_float32_sae(tiny_dir):
    """x − x̂ is formed in the wider dtype, so x' = x̂ + e cast back to bfloat16 is the clean residual."""
    a = load_adapter(tiny_dir("llava"), dtype=torch.bfloat16)
    enc = a.encode(prompts(2))
    attr = attribute(a, make_sae(a.d_model), LAYER, enc, "red", "blue", exact_top=2)
    clean = logit_diff(a, enc, a.forward_logits(enc.inputs)).double().numpy()
    np.testing.assert_allclose(attr.metric, clean, atol=1e-6)
    assert np.isfinite(attr.attribution_R).all() and np.isfinite(attr.per_feature(0).column("exact_effect")
                                                                  .to_numpy()[:3]).sum() == 2
