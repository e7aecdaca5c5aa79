"""Shared helpers of the attribution tests: random SAEs and prompts."""

import torch
from PIL import Image

FAMILIES = ["llava", "qwen2_vl", "gemma3"]
LAYER = 1


def make_sae(d_in: int, kind: str = "topk", n_latents: int = 64, k: int = 8, seed: int = 0,
             dtype: str = "float32", hook_layer: int | None = LAYER):
    """A seeded random SAE; b_dec is made non-zero so that error and reconstruction are not trivial."""
    from mmsae.sae import SAE, SAEConfig

    extra = {"k": k} if kind in ("topk", "batchtopk") else {}
    sae = SAE.from_config(SAEConfig(kind=kind, d_in=d_in, n_latents=n_latents, hook_layer=hook_layer, dtype=dtype,
                                    **extra))
    sae.reset_parameters(torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed + 1))
    return sae.eval()


def prompts(n: int = 1):
    from mmsae.models import Prompt

    items = [Prompt([Image.new("RGB", (40, 30), "red")], "what colour is the star"),
             Prompt([Image.new("RGB", (36, 36), "blue")], "<image> is there a circle on the left")]
    return [items[i % 2] for i in range(n)]


def token_id(adapter, word: str) -> int:
    (i,) = adapter.tokenizer.encode(word, add_special_tokens=False)
    return int(i)


def read_cols(enc) -> torch.Tensor:
    """The last real column of each sequence of the batch."""
    mask = enc.inputs["attention_mask"]
    return (mask * torch.arange(mask.shape[1])).argmax(1)


def logit_diff(adapter, enc, logits_BSV, target: str = "red", baseline: str = "blue") -> torch.Tensor:
    rows = torch.arange(logits_BSV.shape[0])
    logits_BV = logits_BSV[rows, read_cols(enc).to(logits_BSV.device)].float()
    return logits_BV[:, token_id(adapter, target)] - logits_BV[:, token_id(adapter, baseline)]


def reference(adapter, sae, layer, enc, target: str = "red", baseline: str = "blue"):
    """Independently of mmsae.attribute: d_B, the dense attribution of every latent [B, S, F] and the error
    term [B, S], from ∂d/∂x at the layer (∂d/∂z_i = W_dec[i]·∂d/∂x, ∂d/∂e = ∂d/∂x since x = x̂ + e)."""
    from mmsae.models.intervene import leaf

    box = {}
    with adapter.intervene(layer, leaf(box)):
        logits = adapter.forward_logits(enc.inputs, grad=True)
    d_B = logit_diff(adapter, enc, logits, target, baseline)
    (g_BSD,) = torch.autograd.grad(d_B.sum(), box["x"])
    B, S, D = g_BSD.shape
    with torch.no_grad():
        x_TD = box["x"].detach().reshape(B * S, D).to(sae.W_dec.dtype)
        g_TD = g_BSD.reshape(B * S, D).to(sae.W_dec.dtype)
        codes = sae.encode(x_TD)
        z_TF = codes.to_dense()
        attr_TF = -z_TF * (g_TD @ sae.W_dec.T)
        error_T = -((x_TD - sae.decode(codes)) * g_TD).sum(-1)
    return d_B.detach(), z_TF.reshape(B, S, -1), attr_TF.reshape(B, S, -1), error_T.reshape(B, S)


def first_cols(enc) -> list[int]:
    mask = enc.inputs["attention_mask"]
    return [int(mask[b].nonzero()[0]) for b in range(mask.shape[0])]
