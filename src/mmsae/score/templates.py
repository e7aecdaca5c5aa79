"""Versioned prompt templates of the score stage (score/prompts/*.json): the detection question and the
explanation -> entity phrase rewrite. A template is a JSON object with at least `version` and `mode`."""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = Path(__file__).parent / "prompts"


def shipped() -> list[str]:
    return sorted(p.stem for p in PROMPTS.glob("*.json"))


def load_template(name_or_path: str | Path, modes: tuple[str, ...]) -> dict:
    """A shipped template by version (e.g. 'detect-yesno-v1') or a JSON file of your own; its `mode`
    must be one of `modes`."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROMPTS / f"{name_or_path}.json"
    if not path.is_file():
        raise ValueError(f"unknown score template {str(name_or_path)!r}; shipped: {', '.join(shipped())}")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"score template {path} is not valid JSON: {err}") from None
    missing = [k for k in ("version", "mode") if k not in data]
    if missing:
        raise ValueError(f"score template {path} lacks {', '.join(missing)}")
    if data["mode"] not in modes:
        raise ValueError(f"score template {path} has mode {data['mode']!r}; expected one of {', '.join(modes)}")
    return data
