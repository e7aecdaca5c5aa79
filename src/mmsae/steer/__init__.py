"""Steering an LMM through SAE features: clamp, add or scale a feature (or add a plain vector) on a
token set (image, text, prompt, generated, all), in a forward pass and in KV-cached generation.

    from mmsae.steer import Clamp, steering, generate
    with steering(adapter, sae, layer, [Clamp(7, 20.0, tokens="image")], enc):
        logits_BSV = adapter.forward_logits(enc.inputs)
    texts = generate(adapter, sae, layer, prompts, [Add(7, 8.0)], max_new_tokens=8)

May import (the layers of pyproject.toml's importlinter contract): explain, score, llm, index, train, evals,
sae, store, models, data, world, viz, io, util, defaults; not its siblings attribute, saev, finetune.
"""

from mmsae.steer.apply import steering
from mmsae.steer.interventions import TOKEN_SETS, Add, AddVector, Clamp, Intervention, Scale
from mmsae.steer.run import SteerConfig, generate, run_steer

__all__ = ["TOKEN_SETS", "Add", "AddVector", "Clamp", "Intervention", "Scale", "SteerConfig", "generate",
           "run_steer", "steering"]
