"""Choose the adapter from the HF config and load model + processor (offline-friendly)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .base import Adapter, AdapterError
from .llava import LlavaAdapter, LlavaNextAdapter

ADAPTERS: list[type[Adapter]] = [LlavaAdapter, LlavaNextAdapter]


def _register_optional() -> None:
    # Families in their own modules register on first use, keeping `import mmsae.models` light.
    from . import families  # noqa: F401


def adapter_class(model_type: str) -> type[Adapter]:
    _register_optional()
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls
    known = sorted(t for c in ADAPTERS for t in c.model_types)
    raise AdapterError(f"no adapter for model_type {model_type!r}; supported: {', '.join(known)}")


def model_shape(path: str | Path, layer: int | None = None) -> tuple[int | None, int | None]:
    """(d_model, n_layers) of a model directory, read from its config before any weights load.

    Clear errors for a directory without config.json, a family without an adapter and, when `layer` is
    given, a layer outside the model's decoder blocks. None where the config does not say."""
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise AdapterError(f"model {path} is not a model directory (no config.json)")
    config = AutoConfig.from_pretrained(path)
    adapter_class(config.model_type)
    text = config.get_text_config()
    d_model, n_layers = getattr(text, "hidden_size", None), getattr(text, "num_hidden_layers", None)
    if layer is not None:
        check_layer_range(path, n_layers, layer)
    return (None if d_model is None else int(d_model)), n_layers


def check_layer_range(path: str | Path, n_layers: int | None, layer: int) -> None:
    if n_layers is not None and not 0 <= layer < n_layers:
        raise AdapterError(f"layer {layer} is out of range: model {path} has {n_layers} decoder blocks (0..{n_layers - 1})")


def supported_model_types() -> list[str]:
    _register_optional()
    return sorted(t for c in ADAPTERS for t in c.model_types)


def load_adapter(
    path_or_model: str | os.PathLike | torch.nn.Module,
    processor=None,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Adapter:
    """An adapter for a local model directory (or an already loaded model plus its processor).

    The family comes from `config.model_type`; an unsupported one raises AdapterError before
    any weights are read."""
    if isinstance(path_or_model, torch.nn.Module):
        if processor is None:
            raise AdapterError("pass the processor along with an already loaded model")
        cls = adapter_class(path_or_model.config.model_type)
        return cls(path_or_model, processor, source=getattr(path_or_model, "name_or_path", None))
    from transformers import AutoConfig

    path = Path(path_or_model)
    if not (path / "config.json").is_file():
        raise AdapterError(f"{path} is not a model directory (no config.json)")
    config = AutoConfig.from_pretrained(path)
    cls = adapter_class(config.model_type)
    model = cls.load_model(path, dtype=dtype) if hasattr(cls, "load_model") else _load_model(path, dtype)
    if device is not None:
        model = model.to(device)
    if processor is None:
        processor = cls.load_processor(path) if hasattr(cls, "load_processor") else _load_processor(path)
    return cls(model, processor, source=str(path))


def _load_model(path: Path, dtype: torch.dtype | None):
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": dtype} if dtype is not None else {}
    return AutoModelForImageTextToText.from_pretrained(path, **kwargs).eval()


def _load_processor(path: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)
