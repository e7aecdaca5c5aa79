"""Registers the families whose adapters live in their own modules."""

from __future__ import annotations

from .registry import ADAPTERS

_FAMILY_MODULES: list[str] = ["qwen", "idefics", "gemma3", "onevision", "chameleon"]

for _name in _FAMILY_MODULES:
    import importlib

    _mod = importlib.import_module(f"{__package__}.{_name}")
    for _cls in getattr(_mod, "ADAPTERS", []):
        if _cls not in ADAPTERS:
            ADAPTERS.append(_cls)
