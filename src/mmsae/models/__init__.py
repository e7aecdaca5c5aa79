"""Model adapters: one per LMM family, chosen from the HF config.

    adapter = load_adapter("path/to/model")
    enc = adapter.encode([Prompt([image], "<image> describe")])
    acts_BSD = adapter.capture(enc.inputs, layer=12)      # stops after block 12
    with adapter.replace(12, lambda acts_BSD: acts_BSD * 0.5):
        adapter.generate(enc.inputs, max_new_tokens=8)
    with adapter.intervene(12, lambda hidden_BSD, site: edit(hidden_BSD, site.cols)):  # models.intervene
        logits_BSV = adapter.forward_logits(enc.inputs, grad=True)   # every step of cached generate too

`layer=L` is the output of decoder block L (0-indexed) = `hidden_states[L+1]` = paper "layer L+1".

Families (config.model_type): llava (LLaVA-1.5, the zoo subject), llava_next, llava_onevision,
qwen2_vl, qwen2_5_vl, idefics3, smolvlm, gemma3, chameleon. `mmsae.models.tiny` builds a tiny
random model of each offline. Every encoded sequence gets a TokenTable: position, token id,
modality (text / image / special), image index, tile, patch row/col and the pixel box in the
original image.

May import (the layers of pyproject.toml's importlinter contract): data, world, viz, io, util, defaults.
"""

from .base import IMAGE_PLACEHOLDER, Adapter, AdapterError, Encoded, Prompt
from .registry import load_adapter, supported_model_types
from .table import IMAGE, MODALITIES, SPECIAL, TEXT, ImageTokens, TokenTable

__all__ = [
    "IMAGE",
    "IMAGE_PLACEHOLDER",
    "MODALITIES",
    "SPECIAL",
    "TEXT",
    "Adapter",
    "AdapterError",
    "Encoded",
    "ImageTokens",
    "Prompt",
    "TokenTable",
    "load_adapter",
    "supported_model_types",
]
