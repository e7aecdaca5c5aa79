"""Shared pieces of the steer tests (imported by name: pytest puts this directory on sys.path)."""

import torch
from PIL import Image

FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm", "gemma3",
            "chameleon"]


def random_sae(d_in: int, n_latents: int = 64, k: int = 4, seed: int = 0):
    """A random TopK SAE with a non-zero encoder bias, so that its codes are not all tiny."""
    from mmsae.sae.base import SAE
    from mmsae.sae.config import SAEConfig

    sae = SAE.from_config(SAEConfig(kind="topk", d_in=d_in, n_latents=n_latents, k=k))
    gen = torch.Generator().manual_seed(seed)
    sae.reset_parameters(gen)
    with torch.no_grad():
        sae.b_enc.copy_(torch.rand(n_latents, generator=gen) * 0.1)
    return sae.eval()


def prompts(n: int = 2):
    """An image prompt and a text-only prompt of a different length (so padding is exercised)."""
    out = [("red", "what colour is the star"), (None, "the shape is"), ("blue", "describe")][:n]
    from mmsae.models import Prompt

    return [Prompt([Image.new("RGB", (40, 30), c)] if c else [], t) for c, t in out]


def image_prompts(n: int = 2):
    from mmsae.models import Prompt

    out = [("red", "what colour is the star"), ("blue", "the shape is")][:n]
    return [Prompt([Image.new("RGB", (40, 30), c)], t) for c, t in out]


def grown(enc_inputs: dict, ids_BS: torch.Tensor) -> dict:
    """The prompt's inputs with the sequence grown to ids_BS: new columns are attended text tokens."""
    width = enc_inputs["input_ids"].shape[1]
    B, extra = ids_BS.shape[0], ids_BS.shape[1] - width
    inputs = dict(enc_inputs)
    inputs["input_ids"] = ids_BS
    inputs["attention_mask"] = torch.cat([enc_inputs["attention_mask"], torch.ones(B, extra, dtype=torch.long)], 1)
    for k in ("mm_token_type_ids", "token_type_ids"):
        if k in enc_inputs:
            inputs[k] = torch.cat([enc_inputs[k], torch.zeros(B, extra, dtype=enc_inputs[k].dtype)], 1)
    return inputs


def eos_ids(adapter) -> list[int]:
    ids = adapter.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return [int(i) for i in ids if i is not None] or [int(adapter.tokenizer.eos_token_id)]


def recompute(adapter, enc, n: int, steer) -> torch.Tensor:
    """Greedy decoding without a cache: each step one full forward over the sequence so far, under a
    fresh `steer()` context, EOS suppressed as generate's min_new_tokens does. Returns all ids."""
    cur_BS = enc.inputs["input_ids"]
    eos = eos_ids(adapter)
    for _ in range(n):
        with steer():
            logits_BSV = adapter.forward_logits(grown(enc.inputs, cur_BS))
        last_BV = logits_BSV[:, -1].float().clone()
        last_BV[:, eos] = float("-inf")
        cur_BS = torch.cat([cur_BS, last_BV.argmax(-1, keepdim=True).cpu()], 1)
    return cur_BS
