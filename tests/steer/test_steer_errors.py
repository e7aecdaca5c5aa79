"""Bad steering input is a ValueError naming the value and the valid range, raised before any work."""

import pytest
import torch
from steer_helpers import prompts, random_sae

from mmsae.steer import Add, AddVector, Clamp, Scale, steering


@pytest.fixture
def setup(adapter_of, sae_of):
    a = adapter_of("llava")
    return a, sae_of("llava"), a.encode(prompts(2))


def _enter(a, sae, layer, ops, enc, **kw):
    ran = []
    handle = a.model.register_forward_pre_hook(lambda *args: ran.append(1))
    try:
        with steering(a, sae, layer, ops, enc, **kw):
            a.forward_logits(enc.inputs)
    finally:
        handle.remove()
        assert not ran, "the model ran before the error"


@pytest.mark.parametrize("build, match", [
    (lambda: Clamp(-1, 1.0), r"feature must be an integer >= 0, got -1"),
    (lambda: Add(True, 1.0), r"feature must be an integer >= 0, got True"),
    (lambda: Scale(2.5, 1.0), r"feature must be an integer >= 0, got 2.5"),
    (lambda: Clamp(1, float("nan")), r"value must be a finite number, got nan"),
    (lambda: Add(1, float("inf")), r"scale must be a finite number, got inf"),
    (lambda: Scale(1, "2"), r"factor must be a finite number, got '2'"),
    (lambda: Add(1, 1.0, tokens="images"), r"tokens must be one of image, text, prompt, generated, all .*'images'"),
    (lambda: Add(1, 1.0, tokens=torch.ones(2, 3)), r"bool tensor \[B, S\], got torch.float32"),
    (lambda: Add(1, 1.0, tokens=torch.ones(3, dtype=torch.bool)), r"bool tensor \[B, S\].*shape \(3,\)"),
    (lambda: AddVector(torch.zeros(2, 3)), r"vector must be a 1-d tensor \[D\], got \(2, 3\)"),
    (lambda: AddVector(torch.tensor([1.0, float("nan")])), r"vector must be finite"),
])
def test_bad_interventions(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_feature_out_of_range_names_the_range(setup):
    a, sae, enc = setup
    with pytest.raises(ValueError, match=r"feature 64 is out of range: the SAE has 64 latents, valid features are 0\.\.63"):
        _enter(a, sae, 1, [Add(3, 1.0), Clamp(64, 1.0)], enc)


def test_layer_out_of_range(setup):
    a, sae, enc = setup
    with pytest.raises(ValueError, match=r"layer 4 is out of range.*valid layers are 0\.\.3"):
        _enter(a, sae, 4, [Add(3, 1.0)], enc)
    with pytest.raises(ValueError, match=r"layer -1 is out of range"):
        _enter(a, sae, -1, [Add(3, 1.0)], enc)


def test_sae_width_must_match_the_model(setup):
    a, _, enc = setup
    with pytest.raises(ValueError, match=rf"the SAE's d_in 16 does not match the model's width {a.d_model}"):
        _enter(a, random_sae(16), 1, [Add(3, 1.0)], enc)


def test_token_set_that_selects_nothing(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    text_only = a.encode(prompts(2)[1:])
    with pytest.raises(ValueError, match=r"Clamp's tokens='image' selects no token of the batch \(it has 0 image and 3 text tokens\)"):
        _enter(a, sae, 1, [Clamp(3, 1.0, tokens="image")], text_only)
    enc = a.encode(prompts(2))
    with pytest.raises(ValueError, match=r"tokens='image' selects no token of example 1"):
        _enter(a, sae, 1, [[], [Add(3, 1.0, tokens="image")]], enc)
    empty = torch.zeros(enc.inputs["input_ids"].shape, dtype=torch.bool)
    empty[:, 0] = True  # BOS only: special, so nothing is left without steer_special
    with pytest.raises(ValueError, match=r"tokens=mask of 2 tokens selects no token"):
        _enter(a, sae, 1, [Add(3, 1.0, tokens=empty)], enc)
    with steering(a, sae, 1, [Add(3, 1.0, tokens=empty)], enc, steer_special=True):
        pass
    # "generated" selects columns that do not exist yet: never an error
    with steering(a, sae, 1, [Add(3, 1.0, tokens="generated")], text_only):
        pass


def test_bad_shapes_of_the_batch(setup):
    a, sae, enc = setup
    width = enc.inputs["input_ids"].shape[1]
    with pytest.raises(ValueError, match=rf"tokens mask must cover the padded prompt: shape \(2, {width}\), got \(2, 3\)"):
        _enter(a, sae, 1, [Add(3, 1.0, tokens=torch.ones(2, 3, dtype=torch.bool))], enc)
    with pytest.raises(ValueError, match=r"3 per-example lists for a batch of 2 examples"):
        _enter(a, sae, 1, [[], [], []], enc)
    with pytest.raises(ValueError, match=r"not a mix of lists and interventions"):
        _enter(a, sae, 1, [[Add(3, 1.0)], Add(3, 1.0)], enc)
    with pytest.raises(ValueError, match=r"got an item 3"):
        _enter(a, sae, 1, [Add(3, 1.0), 3], enc)
    with pytest.raises(ValueError, match=r"example 1: 'x' is not a Clamp, Add, Scale or AddVector"):
        _enter(a, sae, 1, [[], ["x"]], enc)
    with pytest.raises(ValueError, match=rf"AddVector's vector has 5 entries, the model's width is {a.d_model}"):
        _enter(a, sae, 1, [AddVector(torch.zeros(5))], enc)
    # a forward on another batch than the one steering was set up for
    other = a.encode(prompts(1))
    with pytest.raises(ValueError, match=r"set up for a batch of 2 examples but the model ran 1"):
        with steering(a, sae, 1, [Add(3, 1.0)], enc):
            a.forward_logits(other.inputs)
