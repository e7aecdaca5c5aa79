"""Readers of the explain and score stages' rows: the explanation sets, one set's explanations, what is
already done (for resuming), the stored scores, and the best-scored explanations for reports.

An index that was never explained or scored has no such table; every reader then answers empty."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .db import has_table
from .write import EXPLANATION_STATUSES


@dataclass(frozen=True)
class ExplanationSet:
    model: str
    prompt_version: str
    n_explained: int


def explanation_sets(con) -> list[ExplanationSet]:
    """The (explainer model, prompt version) pairs of the explanations table, most explained first."""
    if not has_table(con, "explanations"):
        return []
    rows = con.execute("""SELECT model, prompt_version, count(*) FILTER (WHERE status = 'explained') AS n, max(created)
        FROM explanations GROUP BY model, prompt_version ORDER BY n DESC, max(created) DESC""").fetchall()
    return [ExplanationSet(m, p, n) for m, p, n, _ in rows]


def read_explanations(con, model: str, prompt_version: str) -> dict[int, tuple[str, str | None, str | None]]:
    """feature -> (status, explanation, reason) for one explanation set (the latest row per feature)."""
    if not has_table(con, "explanations"):
        return {}
    rows = con.execute("""SELECT feature, status, explanation, reason FROM explanations
        WHERE model = ? AND prompt_version = ?
        QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created DESC) = 1""", [model, prompt_version]).fetchall()
    return {f: (s, e, r) for f, s, e, r in rows}


def explained_features(con, model: str, prompt_version: str, include_failed: bool = True) -> set[int]:
    """The features with a row in one explanation set (failed ones left out unless `include_failed`):
    what a rerun of the explain stage skips."""
    if not has_table(con, "explanations"):
        return set()
    sql = "SELECT DISTINCT feature FROM explanations WHERE model = ? AND prompt_version = ?"
    if not include_failed:
        sql += " AND status <> 'failed'"
    return {r[0] for r in con.execute(sql, [model, prompt_version]).fetchall()}


def explanation_counts(con, model: str, prompt_version: str) -> dict[str, int]:
    """status -> rows of one explanation set, for every status (0 when none)."""
    if not has_table(con, "explanations"):
        return dict.fromkeys(EXPLANATION_STATUSES, 0)
    got = dict(con.execute("SELECT status, count(*) FROM explanations WHERE model = ? AND prompt_version = ? "
                           "GROUP BY status", [model, prompt_version]).fetchall())
    return {s: int(got.get(s, 0)) for s in EXPLANATION_STATUSES}


def scored_keys(con) -> set[tuple[int, str, str, str, str]]:
    """(feature, metric, model, explainer, prompt_version) of every stored score: what a rerun skips."""
    if not has_table(con, "scores"):
        return set()
    out = set()
    for f, metric, model, details in con.execute("SELECT feature, metric, model, details FROM scores").fetchall():
        d = json.loads(details or "{}")
        out.add((f, metric, model, d.get("explainer"), d.get("prompt_version")))
    return out


def read_scores(con, explainer: str, prompt_version: str) -> list[tuple[int, str, float, str, str, dict]]:
    """(feature, metric, value, concept_class, model, details) of one explanation set's scores."""
    if not has_table(con, "scores"):
        return []
    out = []
    for f, metric, value, cls, model, details in con.execute(
            "SELECT feature, metric, value, concept_class, model, details FROM scores ORDER BY feature, metric").fetchall():
        d = json.loads(details or "{}")
        if d.get("explainer") == explainer and d.get("prompt_version") == prompt_version:
            out.append((f, metric, value, cls, model, d))
    return out


def score_values(con, metrics, features=None) -> dict[int, dict[str, float]]:
    """feature -> {metric: value} of the stored scores of `metrics` (the latest row of each feature and
    metric), for `features` only when given; features without any of those scores are left out."""
    if not has_table(con, "scores"):
        return {}
    sql = """SELECT feature, metric, value FROM scores WHERE metric IN (SELECT unnest(?::VARCHAR[]))
        QUALIFY row_number() OVER (PARTITION BY feature, metric ORDER BY created DESC) = 1 ORDER BY feature, metric"""
    wanted = None if features is None else {int(f) for f in features}
    out: dict[int, dict[str, float]] = {}
    for f, metric, value in con.execute(sql, [list(metrics)]).fetchall():
        if value is not None and (wanted is None or f in wanted):
            out.setdefault(int(f), {})[metric] = float(value)
    return out


@dataclass
class ScoredExplanation:
    feature: int
    explanation: str
    value: float  # the score of `metric` in best_explained


def best_explained(con, metric: str = "iou", limit: int = 3) -> list[ScoredExplanation]:
    """The explained features with the best stored `metric` score, best first (ties by feature id)."""
    if not (has_table(con, "scores") and has_table(con, "explanations")):
        return []
    rows = con.execute("""SELECT e.feature, e.explanation, s.value
        FROM (SELECT * FROM explanations QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created DESC) = 1) e
        JOIN (SELECT * FROM scores WHERE metric = ?
              QUALIFY row_number() OVER (PARTITION BY feature ORDER BY created DESC) = 1) s USING (feature)
        WHERE e.status = 'explained' ORDER BY s.value DESC, e.feature LIMIT ?""", [metric, int(limit)]).fetchall()
    return [ScoredExplanation(int(f), text, float(v)) for f, text, v in rows]
