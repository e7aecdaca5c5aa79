"""Explanations of SAE features by a larger LMM: prompts, strict parsing, the answers into the index.

The chat backends (HTTP, local HF, the server) live in `mmsae.llm`.

May import (the layers of pyproject.toml's importlinter contract): llm, index, train, evals, sae, store, models,
data, world, viz, io, util, defaults; not its sibling score.
"""

from __future__ import annotations

import time

from PIL import Image

from ..index.write import ExplanationRow
from .parse import Parsed, parse_answer
from .prompt import PromptTemplate


def explain(features: list[int], image_sets: list[list[Image.Image]], backend,
            template: PromptTemplate) -> list[ExplanationRow]:
    """Ask the backend for the common pattern of each feature's masked images; every answer is parsed
    strictly and failures are kept as failures, never as explanations. The rows are those of the index's
    explanations table (`mmsae.index.write_explanations` stores them)."""
    if len(features) != len(image_sets):
        raise ValueError(f"{len(features)} features but {len(image_sets)} image sets")
    completions = backend.complete_many([template.messages(ims) for ims in image_sets])
    out = []
    for f, c in zip(features, completions):
        p = parse_answer(c.text) if c.error is None else Parsed("failed", None, c.error)
        out.append(ExplanationRow(f, p.status, p.explanation, c.text, p.reason, backend.name, template.version,
                                  time.time()))
    return out


from .run import ExplainConfig, run_explain  # noqa: E402  (run.py builds on explain() above)

__all__ = ["explain", "PromptTemplate", "parse_answer", "ExplainConfig", "run_explain"]
