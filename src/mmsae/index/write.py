"""The rows the explain and score stages add to an index, and their writers.

Each writer is one transaction, so a run killed midway loses at most the batch it was writing and leaves
no partial batch behind. Explanations replace the rows of the same (feature, model, prompt version), so a
rerun of a batch does not duplicate it; scores are appended, and the score stage skips what is stored
(`results.scored_keys`) so a resumed run writes each (feature, metric, model, explanation set) once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field

from .db import create_tables, transaction

EXPLANATION_STATUSES = ("explained", "uninterpretable", "failed")


@dataclass(frozen=True)
class ExplanationRow:
    """One row of `explanations`, in its column order."""

    feature: int
    status: str  # explained | uninterpretable | failed
    explanation: str | None
    raw: str | None  # the explainer's answer as it came
    reason: str | None  # why it failed or was not interpretable
    model: str  # the explainer
    prompt_version: str
    created: float  # unix time


@dataclass(frozen=True)
class ScoreRow:
    """One row of `scores`, in its column order; `details` is stored as JSON."""

    feature: int
    metric: str
    value: float | None
    concept_class: str | None
    details: dict = field(default_factory=dict)  # its explanation set (explainer, prompt_version) and more
    model: str = ""  # the scorer (segmenter, CLIP, judge)
    created: float = 0.0


def write_explanations(con, rows: Sequence[ExplanationRow]) -> None:
    """Replace the rows of these features for each (model, prompt version) among `rows`, all or nothing."""
    bad = [r.status for r in rows if r.status not in EXPLANATION_STATUSES]
    if bad:
        raise ValueError(f"explanation status must be one of {EXPLANATION_STATUSES}, got {bad[0]!r}")
    create_tables(con, "explanations")
    if not rows:
        return
    with transaction(con):
        for model, version in sorted({(r.model, r.prompt_version) for r in rows}):
            feats = [int(r.feature) for r in rows if (r.model, r.prompt_version) == (model, version)]
            con.execute("DELETE FROM explanations WHERE model = ? AND prompt_version = ? "
                        "AND feature IN (SELECT unnest(?::INTEGER[]))", [model, version, feats])
        con.executemany("INSERT INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [astuple(r) for r in rows])


def write_scores(con, rows: Sequence[ScoreRow]) -> None:
    """Append score rows, all or nothing."""
    create_tables(con, "scores")
    if not rows:
        return
    with transaction(con):
        con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(r.feature, r.metric, r.value, r.concept_class, json.dumps(r.details), r.model, r.created)
                         for r in rows])
