"""Exact effects (reruns with a feature zeroed) against manual reruns and a model made linear at the layer;
the per-patch heatmap."""

import numpy as np
import pytest
import torch
from attribute_helpers import FAMILIES, LAYER, logit_diff, make_sae, prompts
from PIL import Image

from mmsae.attribute import ERROR, attribute, exact_effects, make_readout
from mmsae.models import IMAGE, load_adapter


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_effect_equals_a_manual_rerun_with_the_feature_zeroed(adapter_of, family):
    a = adapter_of(family)
    sae = make_sae(a.d_model)
    enc = a.encode(prompts(2))
    attr = attribute(a, sae, LAYER, enc, "red", "blue", exact_top=4, exact_batch=3)
    clean = logit_diff(a, enc, a.forward_logits(enc.inputs))
    acts_BSD = a.capture(enc.inputs, LAYER).clone()
    B, S, D = acts_BSD.shape
    with torch.no_grad():
        z_BSF = sae.encode(acts_BSD.reshape(B * S, D)).to_dense().reshape(B, S, -1)
    for b in range(2):
        per = attr.per_feature(b).to_pydict()
        top = [f for f in per["feature"] if f != ERROR][:4]
        assert attr.top_features(b, 4) == top
        for f, exact in zip(per["feature"], per["exact_effect"]):
            if f not in top:
                assert np.isnan(exact)
                continue
            push_BSD = torch.zeros_like(acts_BSD)
            push_BSD[b] = z_BSF[b, :, f, None] * sae.W_dec[f].detach()
            with a.intervene(LAYER, lambda h, site: h - push_BSD):
                ablated = logit_diff(a, enc, a.forward_logits(enc.inputs))
            assert exact == pytest.approx(float(ablated[b] - clean[b]), rel=1e-4, abs=1e-5)
            # the other example is untouched by example b's ablation
            assert float(ablated[1 - b]) == pytest.approx(float(clean[1 - b]), abs=1e-5)
        # table rows carry their feature's exact effect on every position
        t = attr.table().to_pydict()
        sel = (np.asarray(t["example"]) == b) & (np.asarray(t["feature"]) == top[0])
        assert sel.sum() >= 1
        assert np.all(np.asarray(t["exact_effect"])[sel] == per["exact_effect"][per["feature"].index(top[0])])


def test_in_a_model_linear_after_the_layer_the_estimate_is_exact(tiny_dir):
    """At the last block with the final norm removed, d is linear in the residual: −z·∂d/∂z is then the
    exact effect of zeroing the feature, for every feature (and zero away from the read-out position)."""
    a = load_adapter(tiny_dir("llava"), dtype=torch.float64)
    a.model.model.language_model.norm = torch.nn.Identity()
    last = a.n_layers - 1
    sae = make_sae(a.d_model, dtype="float64", n_latents=32, k=6, hook_layer=last)
    enc = a.encode(prompts(2))
    attr = attribute(a, sae, last, enc, "red", "blue", exact_top=32, exact_batch=16)
    for b in range(2):
        per = attr.per_feature(b).to_pydict()
        feats = np.asarray(per["feature"])
        exact, est = np.asarray(per["exact_effect"]), np.asarray(per["attribution"])
        ok = feats != ERROR
        assert np.isfinite(exact[ok]).all() and ok.sum() > 6
        np.testing.assert_allclose(exact[ok], est[ok], rtol=1e-7, atol=1e-9)
        t = attr.table().to_pydict()
        sel = np.asarray(t["example"]) == b
        late = sel & (np.asarray(t["position"]) != attr.read_position[b])
        assert np.all(np.asarray(t["attribution"])[late] == 0)


def test_exact_effects_takes_any_feature_list_and_computes_what_it_needs(adapter_of):
    a = adapter_of("llava")
    sae = make_sae(a.d_model)
    enc = a.encode(prompts(2))
    attr = attribute(a, sae, LAYER, enc, "red", "blue", exact_top=3)
    readout = make_readout(a, enc, "red", "blue")
    features = [attr.top_features(0, 3), attr.top_features(1, 2) + [63]]
    out = exact_effects(a, sae, LAYER, enc, features, readout, batch=2)
    np.testing.assert_allclose(out[0], attr.per_feature(0).column("exact_effect").to_numpy()[
        [attr.per_feature(0).column("feature").to_pylist().index(f) for f in features[0]]], rtol=1e-4, atol=1e-5)
    active_1 = set(attr.table().filter(attr.table().column("example").to_numpy() == 1).column("feature").to_pylist())
    if 63 not in active_1:
        assert out[1][2] == pytest.approx(0.0, abs=1e-6)  # an inactive feature changes nothing
    with pytest.raises(ValueError, match=r"out of range 0\.\.63"):
        exact_effects(a, sae, LAYER, enc, [[64], []], readout)
    with pytest.raises(ValueError, match="2 lists for a batch of 2|lists for a batch"):
        exact_effects(a, sae, LAYER, enc, [[1]], readout)


def test_heatmap_paints_each_patch_with_its_summed_attribution(adapter_of):
    a = adapter_of("llava")
    sae = make_sae(a.d_model)
    images = [p.images[0] for p in prompts(2)]
    enc = a.encode(prompts(2))
    attr = attribute(a, sae, LAYER, enc, "red", "blue")
    for b in range(2):
        boxes_N4, value_N = attr.patch_values(b, 0)
        pos = attr.per_position(b).to_pydict()
        is_image = np.asarray(pos["modality"]) == "image"
        table = enc.tables[b]
        assert len(value_N) == int((table.modality == IMAGE).sum()) == is_image.sum()
        np.testing.assert_allclose(value_N, np.asarray(pos["total"])[is_image])
        no_err = attr.patch_values(b, 0, include_error=False)[1]
        np.testing.assert_allclose(no_err, np.asarray(pos["features"])[is_image])
        assert np.all(np.isfinite(boxes_N4))
        pic = attr.heatmap(b, 0, images[b])
        assert isinstance(pic, Image.Image) and pic.size == images[b].size
        assert not np.array_equal(np.asarray(pic), np.asarray(images[b].convert("RGB")))
    f = attr.top_features(0, 1)[0]
    one = attr.patch_values(0, 0, feature=f)[1]
    t = attr.table().to_pydict()
    sel = (np.asarray(t["example"]) == 0) & (np.asarray(t["feature"]) == f) & (np.asarray(t["modality"]) == "image")
    assert one.sum() == pytest.approx(np.asarray(t["attribution"])[sel].sum())
    pos_pic = np.asarray(attr.heatmap(0, 0, images[0], sign="positive", feature=f))
    assert pos_pic.shape == np.asarray(images[0]).shape
    with pytest.raises(ValueError, match="image_index"):
        attr.heatmap(0, 1, images[0])
    with pytest.raises(ValueError, match="sign must be one of abs, positive, negative"):
        attr.heatmap(0, 0, images[0], sign="up")
    with pytest.raises(ValueError, match=r"example must be in 0\.\.1"):
        attr.heatmap(2, 0, images[0])
