"""Which model, layer, data and prompt to splice an SAE into, checked before any weights load.

Defaults come from the store manifest the SAE is evaluated on (model path, layer, data spec, prompt,
streamed mean for mean-ablation), then from the SAE's own config (model, hook layer). The store's
prompt goes with the store's data only: `--data` without `--prompt` uses that source's default."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class SpliceSettings:
    model: str
    data: str
    layer: int
    prompt: str | None = None
    max_image_pixels: int | None = None
    mean_D: list[float] | None = field(default=None, repr=False)  # the store's mean; None: per batch

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "layer": self.layer, "prompt": self.prompt}


def _manifest(store: str | Path | None) -> dict[str, Any]:
    if store is None or not (Path(store) / "manifest.json").is_file():
        return {}
    return json.loads((Path(store) / "manifest.json").read_text())


def check_target(model: str, d_in: int, layer: int) -> None:
    """A clear error for a missing model, a width that is not the SAE's, or a layer out of range."""
    from mmsae.models.registry import model_shape

    width, _ = model_shape(model, layer)
    if width is not None and width != d_in:
        raise ValueError(f"the SAE's d_in {d_in} does not match the width {width} of model {model}")


def resolve_splice_settings(sae_cfg: Any, store: str | Path | None = None, model: str | None = None,
                            data: str | None = None, prompt: str | None = None,
                            layer: int | None = None) -> SpliceSettings:
    """Explicit options win, then the store manifest, then the SAE config; checked against the model."""
    manifest = _manifest(store)
    settings = manifest.get("settings") or {}
    store_model = (manifest.get("model") or {}).get("path")
    model = model or store_model or sae_cfg.model
    layer = layer if layer is not None else manifest.get("layer", sae_cfg.hook_layer)
    if data is None:  # the store's data with the store's prompt; other data keeps its own default prompt
        data = settings.get("data")
        prompt = prompt if prompt is not None else settings.get("prompt")
    if model is None:
        raise ValueError("no model to splice into: give --model (neither a store manifest nor the SAE config names one)")
    if layer is None:
        raise ValueError("no layer to splice at: give --layer (neither a store manifest nor the SAE config names one)")
    if data is None:
        raise ValueError("no data to splice on: give --data (e.g. world:n=64,seed=1), or --store of a harvested store")
    if sae_cfg.hook_layer is not None and sae_cfg.hook_layer != layer:
        raise ValueError(f"the SAE was trained on layer {sae_cfg.hook_layer}, not {layer}; give --layer {sae_cfg.hook_layer}")
    check_target(model, sae_cfg.d_in, layer)
    same_stream = manifest.get("layer") == layer and store_model is not None and Path(store_model).resolve() == Path(model).resolve()
    mean_D = manifest.get("mean") if same_stream and manifest.get("mean") else None
    return SpliceSettings(model=str(model), data=data, layer=int(layer), prompt=prompt,
                          max_image_pixels=settings.get("max_image_pixels"), mean_D=mean_D)


def run_splice(settings: SpliceSettings, sae: Any, records: int, batch_size: int = 4, device: str = "cpu",
               model_dtype: str | None = None, answer_marker: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Load the data and the model and splice `sae` into it over the first `records` records."""
    from mmsae.data import DEFAULT_MAX_PIXELS, open_source
    from mmsae.evals.splice import evaluate_splice
    from mmsae.models import load_adapter

    source = open_source(settings.data, prompt=settings.prompt, max_pixels=settings.max_image_pixels or DEFAULT_MAX_PIXELS)
    dtype = getattr(torch, model_dtype) if model_dtype else None
    adapter = load_adapter(settings.model, dtype=dtype, device=device)
    mean_D = torch.tensor(settings.mean_D, dtype=torch.float64) if settings.mean_D is not None else None
    out = evaluate_splice(adapter, sae, source, settings.layer, records, batch_size=batch_size, mean_D=mean_D,
                          answer_marker=answer_marker, progress=progress)
    out.update(settings.describe())
    return out
