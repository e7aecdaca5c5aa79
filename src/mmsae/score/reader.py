"""The score stage's own tables of a feature index (index.duckdb, the shared contract): the explanation
sets it scores and the `scores` table it writes. Top images, meta and the indexed data come through
mmsae.index's readers."""

from __future__ import annotations

import json
from dataclasses import dataclass

SCORES_DDL = ("CREATE TABLE IF NOT EXISTS scores(feature INTEGER, metric VARCHAR, value DOUBLE, concept_class VARCHAR, "
              "details VARCHAR, model VARCHAR, created DOUBLE)")


def _has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


def feature_ids(con) -> set[int]:
    return {r[0] for r in con.execute("SELECT feature FROM features").fetchall()}


def feature_max_acts(con) -> dict[int, float]:
    return {f: float(m or 0.0) for f, m in con.execute("SELECT feature, max_act FROM features").fetchall()}


@dataclass(frozen=True)
class ExplanationSet:
    model: str
    prompt_version: str
    n_explained: int


def explanation_sets(con) -> list[ExplanationSet]:
    """The (explainer model, prompt version) pairs of the explanations table, most explained first."""
    if not _has_table(con, "explanations"):
        return []
    rows = con.execute("""SELECT model, prompt_version, count(*) FILTER (WHERE status = 'explained') AS n, max(created)
        FROM explanations GROUP BY model, prompt_version ORDER BY n DESC, max(created) DESC""").fetchall()
    return [ExplanationSet(m, p, n) for m, p, n, _ in rows]


def read_explanations(con, model: str, prompt_version: str) -> dict[int, tuple[str, str | None, str | None]]:
    """feature -> (status, explanation, reason) for one explanation set (the latest row per feature)."""
    rows = con.execute("""SELECT feature, status, explanation, reason FROM explanations
        WHERE model = ? AND prompt_version = ?
        QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created DESC) = 1""", [model, prompt_version]).fetchall()
    return {f: (s, e, r) for f, s, e, r in rows}


def scored_keys(con) -> set[tuple[int, str, str, str, str]]:
    """(feature, metric, model, explainer, prompt_version) of every stored score: what a rerun skips."""
    if not _has_table(con, "scores"):
        return set()
    out = set()
    for f, metric, model, details in con.execute("SELECT feature, metric, model, details FROM scores").fetchall():
        d = json.loads(details or "{}")
        out.add((f, metric, model, d.get("explainer"), d.get("prompt_version")))
    return out


def read_scores(con, explainer: str, prompt_version: str) -> list[tuple[int, str, float, str, str, dict]]:
    """(feature, metric, value, concept_class, model, details) of one explanation set's scores."""
    if not _has_table(con, "scores"):
        return []
    out = []
    for f, metric, value, cls, model, details in con.execute(
            "SELECT feature, metric, value, concept_class, model, details FROM scores ORDER BY feature, metric").fetchall():
        d = json.loads(details or "{}")
        if d.get("explainer") == explainer and d.get("prompt_version") == prompt_version:
            out.append((f, metric, value, cls, model, d))
    return out
