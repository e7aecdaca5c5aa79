"""Steered KV-cached generation: equal to step-by-step recomputation without a cache, on every family
and both attention kernels; no-ops change nothing; a steered batch equals its examples one by one."""

import pytest
import torch
from steer_helpers import FAMILIES, eos_ids, grown, image_prompts, prompts, recompute

from mmsae.steer import Add, AddVector, Clamp, Scale, generate, steering
from mmsae.steer.run import generate_ids

N_NEW = 4


def _kw(adapter, n=N_NEW):
    return dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=adapter.tokenizer.pad_token_id)


def _ops(adapter):
    """Steers the prompt through codes (clamp, scale) and the generated tokens by a push: a wrong column
    or a skipped decoding step shows in the ids."""
    push_D = torch.randn(adapter.d_model, generator=torch.Generator().manual_seed(1))
    return [Clamp(3, 4.0, tokens="prompt"), Scale(5, 3.0, tokens="all"), Add(9, 2.0, tokens="generated"),
            AddVector(push_D, tokens="generated")]


def _check_cached_equals_recomputed(a, sae, layer=1, n_prompts=2):
    enc = a.encode(prompts(n_prompts), padding_side="left")
    ops = _ops(a)
    with steering(a, sae, layer, ops, enc):
        cached_BS = a.generate(enc.inputs, **_kw(a)).cpu()
    full_BS = recompute(a, enc, N_NEW, lambda: steering(a, sae, layer, ops, enc))
    assert torch.equal(cached_BS, full_BS)
    # the steering matters, the generated-token part included
    clean_BS = a.generate(enc.inputs, **_kw(a)).cpu()
    with steering(a, sae, layer, ops[:2], enc):
        prompt_only_BS = a.generate(enc.inputs, **_kw(a)).cpu()
    assert not torch.equal(cached_BS, clean_BS) and not torch.equal(cached_BS, prompt_only_BS)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("n_prompts", [1, 2])
def test_cached_generate_equals_recomputation_every_family(adapter_of, sae_of, family, n_prompts):
    # one prompt: no padding, so HF generate passes no attention mask and the columns come from the cache
    _check_cached_equals_recomputed(adapter_of(family), sae_of(family), n_prompts=n_prompts)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_cached_generate_equals_recomputation_both_attention_kernels(adapter_of, sae_of, family, attn):
    a = adapter_of(family)
    before = a.model.config._attn_implementation
    a.model.set_attn_implementation(attn)
    try:
        assert a.model.config._attn_implementation == attn
        _check_cached_equals_recomputed(a, sae_of(family), layer=2)
    finally:
        a.model.set_attn_implementation(before)


@pytest.mark.parametrize("family", ["llava", "gemma3"])
def test_noop_interventions_leave_generation_identical(adapter_of, sae_of, family):
    a, sae = adapter_of(family), sae_of(family)
    enc = a.encode(prompts(2), padding_side="left")
    clean = a.model.generate(**a._to_device(enc.inputs), **_kw(a), output_scores=True, return_dict_in_generate=True)
    ops = [Add(3, 0.0), Scale(5, 1.0), AddVector(torch.zeros(a.d_model), tokens="generated")]
    with steering(a, sae, 1, ops, enc):
        same = a.model.generate(**a._to_device(enc.inputs), **_kw(a), output_scores=True, return_dict_in_generate=True)
    assert torch.equal(clean.sequences, same.sequences)
    assert all(torch.equal(c, s) for c, s in zip(clean.scores, same.scores))  # bit-identical logits every step


def test_steered_batch_equals_examples_one_by_one(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    ps = image_prompts(2)
    per = [[Clamp(3, 6.0, tokens="image"), Add(9, 2.0, tokens="generated")], [Scale(5, 4.0, tokens="text")]]
    enc = a.encode(ps, padding_side="left")
    batch_BM = generate_ids(a, sae, 1, enc, per, max_new_tokens=N_NEW)
    for b in range(2):
        one = a.encode([ps[b]], padding_side="left")
        alone_1M = generate_ids(a, sae, 1, one, per[b], max_new_tokens=N_NEW)
        assert torch.equal(batch_BM[b : b + 1], alone_1M), b
    # and the two examples were steered differently: swapping the lists changes the result
    swapped_BM = generate_ids(a, sae, 1, enc, per[::-1], max_new_tokens=N_NEW)
    assert not torch.equal(batch_BM, swapped_BM)


def test_generate_decodes_the_new_tokens(adapter_of, sae_of):
    a, sae = adapter_of("llava"), sae_of("llava")
    ps = prompts(2)
    texts = generate(a, sae, 1, ps, [Add(9, 3.0)], max_new_tokens=3)
    enc = a.encode(ps, padding_side="left")
    ids_BM = generate_ids(a, sae, 1, enc, [Add(9, 3.0)], max_new_tokens=3)
    assert texts == [t.strip() for t in a.tokenizer.batch_decode(ids_BM, skip_special_tokens=True)]
    plain_BS = a.generate(enc.inputs, max_new_tokens=3, do_sample=False, pad_token_id=a.tokenizer.pad_token_id)
    width = enc.inputs["input_ids"].shape[1]
    plain = [t.strip() for t in a.tokenizer.batch_decode(plain_BS[:, width:], skip_special_tokens=True)]
    assert generate(a, sae, 1, ps, [], max_new_tokens=3) == plain and texts != plain
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(a, sae, 1, ps, [], max_new_tokens=0)


@pytest.mark.parametrize("steer_special", [False, True])
def test_generated_eos_and_pad_are_left_alone_unless_steer_special(adapter_of, sae_of, steer_special):
    a, sae = adapter_of("llava"), sae_of("llava")
    enc = a.encode(prompts(1), padding_side="left")
    word = a.tokenizer.convert_tokens_to_ids("red")
    tail = torch.tensor([[word, eos_ids(a)[0], a.tokenizer.pad_token_id, word]])
    inputs = grown(enc.inputs, torch.cat([enc.inputs["input_ids"], tail], 1))
    width = enc.inputs["input_ids"].shape[1]
    box = {}

    def record(key):
        def fn(h, site):
            box[key] = h.clone()
            return h
        return fn

    with a.intervene(1, record("clean")):
        a.forward_logits(inputs)
    with steering(a, sae, 1, [Add(9, 2.0, tokens="generated")], enc, steer_special=steer_special), a.intervene(1, record("steered")):
        a.forward_logits(inputs)
    changed_S = (box["steered"][0] != box["clean"][0]).any(-1)
    assert not bool(changed_S[:width].any())  # "generated" leaves the prompt alone
    assert changed_S[width:].tolist() == [True, steer_special, steer_special, True]
