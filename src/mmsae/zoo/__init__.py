"""The zoo: three models trained on the embedded world, shipped in standard Hugging Face format.

- subject: a small LLaVA (CLIP tower + Llama decoder) whose features the SAEs study;
- explainer: a larger LLaVA that names the concept shared by the visible patches of masked images;
- clip: a CLIP dual encoder for the CLIP score.
"""

from __future__ import annotations

from pathlib import Path

MODELS = ("subject", "explainer", "clip")
WEIGHTS = Path(__file__).parent / "weights"


def model_dir(name: str, root: Path | None = None) -> Path:
    """The directory of a zoo model; a clear error if the name is unknown or the weights are missing."""
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; the zoo has {', '.join(MODELS)}")
    path = (root or WEIGHTS) / name
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"zoo model {name!r} not found at {path} (train it with `mmsae zoo train`)")
    return path


__all__ = ["MODELS", "WEIGHTS", "model_dir"]
