"""Steered greedy generation, and `mmsae steer`: one prompt answered unsteered and steered.

    mmsae steer --sae runs/sae --prompt "<s> user : <image> what colour is the star ? assistant :" \\
        --image star.png --feature 12 --value 30 --mode clamp --tokens image
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch

from mmsae.steer.apply import steering
from mmsae.steer.interventions import Add, Clamp, Scale

MODES = {"clamp": Clamp, "add": Add, "scale": Scale}


def generate_ids(adapter, sae, layer: int, encoded, interventions: Sequence, *, max_new_tokens: int = 8,
                 keep_error: bool = True, steer_special: bool = False) -> torch.Tensor:
    """ids_BM of the new tokens (M = max_new_tokens at most) of greedy, KV-cached generation under steering;
    `encoded` should be left-padded (`adapter.encode(prompts, padding_side="left")`)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    width = int(encoded.inputs["input_ids"].shape[1])
    pad = adapter.tokenizer.pad_token_id
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    if pad is not None:
        kwargs["pad_token_id"] = pad
    with steering(adapter, sae, layer, interventions, encoded, keep_error=keep_error, steer_special=steer_special):
        ids_BS = adapter.generate(encoded.inputs, **kwargs)
    return ids_BS[:, width:].cpu()


def generate(adapter, sae, layer: int, prompts: Sequence, interventions: Sequence, *, max_new_tokens: int = 8,
             keep_error: bool = True, steer_special: bool = False) -> list[str]:
    """The decoded new tokens of greedy generation for each prompt (left padding, KV cache), steered by
    `interventions` (one list for all prompts, or one list per prompt; [] generates unsteered)."""
    encoded = adapter.encode(list(prompts), padding_side="left")
    new_BM = generate_ids(adapter, sae, layer, encoded, interventions, max_new_tokens=max_new_tokens,
                          keep_error=keep_error, steer_special=steer_special)
    return [t.strip() for t in adapter.tokenizer.batch_decode(new_BM, skip_special_tokens=True)]


@dataclass
class SteerConfig:
    """Answer one prompt unsteered and with SAE features clamped, added or scaled, side by side."""

    sae: str
    """SAE directory (mmsae, SAELens or sparsify layout; SAE.from_pretrained)"""
    prompt: str
    """the text as the model reads it, with <image> where the image goes (else the image goes first); for the zoo subject e.g. '<s> user : <image> what colour is the star ? assistant :'"""
    feature: list[int]
    """feature id(s) to steer; several take the same mode and value (e.g. 3,7,12 or 3-5)"""
    value: float
    """clamp: the code the features are set to; add: the multiple of each decoder direction added; scale: the factor"""
    model: str | None = None
    """model directory (None: the zoo subject, mmsae.defaults.default_model)"""
    layer: int | None = None
    """decoder block whose output is steered (0-indexed; None: the layer the SAE records, its hook_layer)"""
    image: str | None = None
    """image file for the prompt (None: a text-only prompt)"""
    mode: Literal["clamp", "add", "scale"] = "clamp"
    """clamp sets z_j = value, add adds value·d_j, scale multiplies z_j by value"""
    tokens: Literal["image", "text", "prompt", "generated", "all"] = "all"
    """tokens steered: the prompt's image or text tokens, the whole prompt, the generated tokens, or all"""
    max_new_tokens: int = 16
    """tokens generated (greedy) for each answer"""
    keep_error: bool = True
    """keep the SAE's reconstruction error (x + change of the decoded output); off: the steered reconstruction replaces x"""
    steer_special: bool = False
    """also steer special tokens (BOS, EOS, chat markers), which are left alone by default"""
    json: bool = False
    """print {"unsteered", "steered", "interventions"} as JSON instead of a table"""
    device: str = "auto"
    """auto: cuda when available, else cpu"""

    def __post_init__(self):
        if not self.feature:
            raise ValueError("feature must name at least one feature id, got []")
        for f in self.feature:
            if f < 0:
                raise ValueError(f"feature ids must be >= 0, got {f!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"value must be a finite number, got {self.value!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens!r}")
        if self.layer is not None and self.layer < 0:
            raise ValueError(f"layer must be >= 0 (a 0-indexed decoder block), got {self.layer!r}")

    def interventions(self) -> list:
        return [MODES[self.mode](int(f), float(self.value), tokens=self.tokens) for f in self.feature]


def resolve_layer(cfg_layer: int | None, sae, sae_path: str) -> int:
    """The layer to steer: the one given, else the SAE's recorded hook_layer."""
    if cfg_layer is not None:
        recorded = sae.cfg.hook_layer
        if recorded is not None and int(recorded) != cfg_layer:
            import logging

            logging.getLogger(__name__).warning("steering layer %d, but the SAE at %s was trained on layer %d",
                                                cfg_layer, sae_path, recorded)
        return cfg_layer
    if sae.cfg.hook_layer is None:
        raise ValueError(f"layer is required: the SAE at {sae_path} records no hook_layer")
    return int(sae.cfg.hook_layer)


def run_steer(cfg: SteerConfig) -> dict:
    """Generate the unsteered and the steered answer, print them side by side (a rich table; not with
    cfg.json, where only the result is printed, by the CLI) and return {"unsteered", "steered",
    "interventions", "layer", "model", "sae", "keep_error"}."""
    from mmsae.defaults import default_model
    from mmsae.models import Prompt, load_adapter
    from mmsae.sae.base import SAE
    from mmsae.util import pick_device

    image = None
    if cfg.image is not None:
        if not Path(cfg.image).is_file():
            raise FileNotFoundError(f"image {cfg.image} not found")
        from PIL import Image

        image = Image.open(cfg.image).convert("RGB")
    if not Path(cfg.sae).exists():
        raise FileNotFoundError(f"SAE {cfg.sae} not found")
    model = cfg.model or default_model()
    device = pick_device(cfg.device)
    sae = SAE.from_pretrained(cfg.sae, device=device).eval()
    layer = resolve_layer(cfg.layer, sae, cfg.sae)
    adapter = load_adapter(model, device=device)
    interventions = cfg.interventions()
    prompts = [Prompt([image] if image is not None else [], cfg.prompt)]
    kw = dict(max_new_tokens=cfg.max_new_tokens, keep_error=cfg.keep_error, steer_special=cfg.steer_special)
    # validate the steering before spending a generation on the unsteered answer
    steered = generate(adapter, sae, layer, prompts, interventions, **kw)[0]
    unsteered = generate(adapter, sae, layer, prompts, [], **kw)[0]
    result = {"unsteered": unsteered, "steered": steered, "interventions": [i.to_dict() for i in interventions],
              "layer": layer, "model": str(model), "sae": str(cfg.sae), "keep_error": cfg.keep_error}
    if not cfg.json:
        _print_table(result)
    # with json the caller prints the result: `mmsae` prints every command's result as JSON
    return result


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ops = ", ".join(f"{i['op']} {i.get('feature', '')} "
                    f"{i.get('value', i.get('scale', i.get('factor', '')))} on {i['tokens']}" for i in result["interventions"])
    table = Table(title=f"layer {result['layer']}: {ops}", show_lines=True)
    table.add_column("unsteered", overflow="fold")
    table.add_column("steered", overflow="fold")
    table.add_row(result["unsteered"] or "(nothing)", result["steered"] or "(nothing)")
    Console().print(table)
