"""The embedded default: where the zoo's models live, so any stage can default to them without importing
the zoo package (which trains and evaluates them and sits high in the layers)."""

from __future__ import annotations

from pathlib import Path

ZOO_MODELS = ("subject", "explainer", "clip")
ZOO_WEIGHTS = Path(__file__).parent / "zoo" / "weights"
ZOO_SERVED_NAME = "explainer"  # the name `mmsae serve-explainer` gives the zoo explainer by default


def zoo_model_dir(name: str, root: Path | None = None) -> Path:
    """The directory of a zoo model; a clear error if the name is unknown or the weights are missing."""
    if name not in ZOO_MODELS:
        raise ValueError(f"unknown zoo model {name!r}; the zoo has {', '.join(ZOO_MODELS)}")
    path = (root or ZOO_WEIGHTS) / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"zoo model {name!r} not found at {path} (train it with `mmsae zoo train`)")
    return path


def default_model() -> str:
    """The model a stage reads when none is given: the zoo subject."""
    return str(zoo_model_dir("subject"))
