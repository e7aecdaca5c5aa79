"""Browsing queries over a feature index for the viewer: a paginated, searched, sorted and filtered feature
list, and per-feature explanations, scores, activation histogram and record lookups.

Every query is server-side and bounded (LIMIT/OFFSET, one feature's rows), so an index of 2^17 features
is never loaded whole. The explanations and scores tables are optional (an index that was never
explained or scored has none), and so are their rows for any feature."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .crossmodal import weights_subquery
from .db import has_table

# sort key -> (column of the list query, default direction); scores are the per-feature latest value
SORTS = {
    "feature": ("feature", "ASC"), "frequency": ("frequency", "DESC"), "n_fires": ("n_fires", "DESC"),
    "max_act": ("max_act", "DESC"), "image_share": ("image_share", "DESC"), "text_share": ("image_share", "ASC"),
    "iou": ("iou", "DESC"), "clip": ("clip", "DESC"), "detection": ("detection_bacc", "DESC"),
    "crossmodal": ("crossmodal", "DESC"),
}
STATUSES = ("explained", "uninterpretable", "failed", "unexplained")
MAX_PER_PAGE = 500
SCORE_METRICS = ("iou", "clip", "detection_bacc")
# each scored metric beside the random baselines it is read against (score.summary's pairs)
BASELINES = {"iou": ("iou_random_images", "iou_random_expl", "iou_random"), "clip": ("clip_random",),
             "detection_bacc": ()}


def _latest_explanations(con) -> str:
    """One row per explained feature: its latest explanation that did not fail, else its latest attempt."""
    if not has_table(con, "explanations"):
        return "(SELECT NULL::INTEGER AS feature, NULL::VARCHAR AS explanation, NULL::VARCHAR AS status LIMIT 0)"
    return """(SELECT feature, explanation, status FROM explanations
        QUALIFY row_number() OVER (PARTITION BY feature ORDER BY (status = 'failed'), created DESC NULLS LAST) = 1)"""


def _latest_scores(con) -> str:
    if not has_table(con, "scores"):
        return ("(SELECT NULL::INTEGER AS feature, NULL::DOUBLE AS iou, NULL::DOUBLE AS clip, "
                "NULL::DOUBLE AS detection_bacc, NULL::VARCHAR AS concept_class LIMIT 0)")
    cols = ", ".join(f"arg_max(value, created) FILTER (WHERE metric = '{m}') AS {m}" for m in SCORE_METRICS)
    return f"""(SELECT feature, {cols}, arg_max(concept_class, created) FILTER (WHERE concept_class IS NOT NULL)
        AS concept_class FROM scores GROUP BY feature)"""


@dataclass
class FeatureRow:
    feature: int
    n_fires: int
    frequency: float
    max_act: float
    image_share: float | None
    explanation: str | None
    status: str  # explained | uninterpretable | failed | unexplained
    concept_class: str | None
    iou: float | None
    clip: float | None
    detection_bacc: float | None
    crossmodal: float | None


@dataclass
class FeaturePage:
    rows: list[FeatureRow]
    total: int  # features matching the search and filters
    page: int
    per_page: int

    @property
    def n_pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def list_features(con, query: str = "", sort: str = "frequency", descending: bool | None = None,
                  concept: str | None = None, status: str | None = None, min_fires: int = 1, page: int = 1,
                  per_page: int = 50) -> FeaturePage:
    """One page of features. `query` is a feature id ("123" or "#123") or words that must all occur in the
    explanation (case-insensitive); `status` filters explained / uninterpretable / failed / unexplained;
    `concept` a concept class of its scores; dead features (< min_fires) are left out. Ties by feature id."""
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {sorted(SORTS)}, got {sort!r}")
    if status not in (None, "", *STATUSES):
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be in 1..{MAX_PER_PAGE}, got {per_page}")
    if page < 1:
        raise ValueError(f"page must be >= 1, got {page}")
    column, direction = SORTS[sort]
    if descending is not None:
        direction = "DESC" if descending else "ASC"
    where, args = ["f.n_fires >= ?"], [int(min_fires)]
    q = (query or "").strip()
    if q.lstrip("#").isdigit():
        where.append("f.feature = ?")
        args.append(int(q.lstrip("#")))
    elif q:
        for word in q.split()[:8]:
            where.append("e.explanation ILIKE ? ESCAPE '\\'")
            args.append("%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    if status:
        where.append("coalesce(e.status, 'unexplained') = ?")
        args.append(status)
    if concept:
        where.append("s.concept_class = ?")
        args.append(concept)
    sql = f"""SELECT f.feature, f.n_fires, f.frequency, f.max_act, f.image_share, e.explanation,
        coalesce(e.status, 'unexplained'), s.concept_class, s.iou, s.clip, s.detection_bacc, c.crossmodal,
        count(*) OVER () AS total
        FROM features f LEFT JOIN {_latest_explanations(con)} e USING (feature)
        LEFT JOIN {_latest_scores(con)} s USING (feature) LEFT JOIN {weights_subquery(con)} c USING (feature)
        WHERE {' AND '.join(where)}
        ORDER BY {column} {direction} NULLS LAST, f.feature LIMIT ? OFFSET ?"""
    rows = con.execute(sql, args + [int(per_page), (int(page) - 1) * int(per_page)]).fetchall()
    if rows:
        total = rows[0][-1]
    else:  # past the last page: still say how many there are
        total = con.execute(f"""SELECT count(*) FROM features f LEFT JOIN {_latest_explanations(con)} e
            USING (feature) LEFT JOIN {_latest_scores(con)} s USING (feature) WHERE {' AND '.join(where)}""",
                            args).fetchone()[0]
    return FeaturePage([FeatureRow(*r[:-1]) for r in rows], int(total), int(page), int(per_page))


def concept_classes(con) -> list[str]:
    if not has_table(con, "scores"):
        return []
    return [r[0] for r in con.execute("SELECT DISTINCT concept_class FROM scores WHERE concept_class IS NOT NULL "
                                      "ORDER BY concept_class").fetchall()]


def n_features(con) -> int:
    return int(con.execute("SELECT count(*) FROM features").fetchone()[0])


@dataclass
class Explanation:
    status: str
    explanation: str | None
    reason: str | None
    model: str | None
    prompt_version: str | None
    created: float | None


def feature_explanations(con, feature: int) -> list[Explanation]:
    """Every explanation of a feature, newest first (one per explainer model and prompt version, usually)."""
    if not has_table(con, "explanations"):
        return []
    return [Explanation(*r) for r in con.execute(
        """SELECT status, explanation, reason, model, prompt_version, created FROM explanations WHERE feature = ?
        ORDER BY created DESC NULLS LAST, model, prompt_version""", [int(feature)]).fetchall()]


@dataclass
class Score:
    metric: str
    value: float | None
    model: str | None
    concept_class: str | None
    baselines: dict[str, float | None] = field(default_factory=dict)  # random baseline metric -> value
    details: dict = field(default_factory=dict)


def feature_scores(con, feature: int) -> list[Score]:
    """The feature's latest value of each scored metric, with its random baselines beside it."""
    if not has_table(con, "scores"):
        return []
    rows = con.execute("""SELECT metric, value, model, concept_class, details FROM scores WHERE feature = ?
        QUALIFY row_number() OVER (PARTITION BY metric ORDER BY created DESC NULLS LAST) = 1 ORDER BY metric""",
                       [int(feature)]).fetchall()
    by_metric = {r[0]: r for r in rows}
    out = []
    for metric, value, model, cls, details in rows:
        if any(metric in b for b in BASELINES.values()):
            continue  # shown beside its metric
        try:
            parsed = json.loads(details) if details else {}
        except ValueError:
            parsed = {"unparsed": details}
        base = {b: by_metric[b][1] for b in BASELINES.get(metric, ()) if b in by_metric}
        out.append(Score(metric, value, model, cls, base, parsed if isinstance(parsed, dict) else {}))
    return out


def activation_histogram(con, feature: int, bins: int = 20) -> tuple[np.ndarray, np.ndarray, int]:
    """(counts, edges, n) of the feature's non-zero activations that the index keeps: every patch of its top
    images and every top text context (the index does not keep its whole activation distribution)."""
    acts = con.execute("""SELECT a FROM (SELECT unnest(acts) AS a FROM patch_maps WHERE feature = ?
        UNION ALL SELECT activation FROM text_contexts WHERE feature = ?) WHERE a > 0""",
                       [int(feature), int(feature)]).fetchnumpy()["a"]
    acts = np.asarray(acts, np.float64)
    if not len(acts):
        return np.zeros(bins, np.int64), np.linspace(0, 1, bins + 1), 0
    counts, edges = np.histogram(acts, bins=bins, range=(0.0, float(acts.max())))
    return counts, edges, len(acts)


def image_ref(con, sample: int, image_index: int):
    """(sample_id, width, height) of an indexed image, or None when the index does not have it."""
    row = con.execute("""SELECT s.sample_id, i.width, i.height FROM images i JOIN samples s USING (sample)
        WHERE i.sample = ? AND i.image_index = ?""", [int(sample), int(image_index)]).fetchone()
    return row


def sample_text(con, sample: int) -> str | None:
    row = con.execute("SELECT text FROM samples WHERE sample = ?", [int(sample)]).fetchone()
    return row[0] if row else None


def indexed_images(con, limit: int = 24) -> list[tuple[int, int, str]]:
    """(sample, image_index, sample_id) of some indexed images, for the image page's picker."""
    return [tuple(r) for r in con.execute("""SELECT i.sample, i.image_index, s.sample_id FROM images i
        JOIN samples s USING (sample) ORDER BY i.sample, i.image_index LIMIT ?""", [int(limit)]).fetchall()]


def neuronpedia_rows(con, features: list[int]):
    """Per feature of `features`: its stats row, text contexts and explanations, for the Neuronpedia export."""
    stats = {r[0]: r for r in con.execute("""SELECT feature, n_fires, frequency, max_act, mean_act FROM features
        WHERE feature IN (SELECT unnest(?::INTEGER[]))""", [features]).fetchall()}
    ctx: dict[int, list] = {f: [] for f in features}
    for r in con.execute("""SELECT t.feature, t.rank, t.sample, t.position, t.token, t.activation, t.context, s.text
        FROM text_contexts t LEFT JOIN samples s USING (sample) WHERE t.feature IN (SELECT unnest(?::INTEGER[]))
        ORDER BY t.feature, t.rank""", [features]).fetchall():
        ctx[r[0]].append(r[1:])
    expl: dict[int, list] = {f: [] for f in features}
    if has_table(con, "explanations"):
        for r in con.execute("""SELECT feature, explanation, model, prompt_version, created FROM explanations
            WHERE feature IN (SELECT unnest(?::INTEGER[])) AND status = 'explained' ORDER BY feature, created""",
                             [features]).fetchall():
            expl[r[0]].append(r[1:])
    return stats, ctx, expl
