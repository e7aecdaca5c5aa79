"""What the score stage reads from and writes to a feature index (index.duckdb, the shared contract):
explanations, top images with their patch maps and pixel geometry, and the `scores` table.

Only the contract's columns are used, so any index that follows it (built by `mmsae index` or by hand)
can be scored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INDEX_FILE = "index.duckdb"
SCORES_DDL = ("CREATE TABLE IF NOT EXISTS scores(feature INTEGER, metric VARCHAR, value DOUBLE, concept_class VARCHAR, "
              "details VARCHAR, model VARCHAR, created DOUBLE)")


def connect(index_dir: str | Path, read_only: bool = True):
    import duckdb

    path = Path(index_dir) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no feature index at {index_dir} ({INDEX_FILE} missing; build one with `mmsae index`)")
    return duckdb.connect(str(path), read_only=read_only)


def read_meta(con) -> dict:
    out = {}
    for key, value in con.execute("SELECT key, value FROM meta").fetchall():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


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


@dataclass
class TopImage:
    feature: int
    rank: int
    sample: int
    sample_id: str
    image_index: int
    width: int
    height: int
    box_N4: np.ndarray  # pixel boxes of the image's tokens (ord order), NaN where none
    act_N: np.ndarray  # the feature's activation on each of them (0 where it does not fire)

    @property
    def key(self) -> tuple[int, int]:
        return (self.sample, self.image_index)


def read_top_images(con, features: list[int], n: int | None = None) -> tuple[dict[int, list[TopImage]], dict[int, str]]:
    """The n strongest top images of each feature; (tops, problems) where problems names the features
    whose rows do not fit together (a map past its image's tokens, an image without geometry or size)."""
    feats = sorted({int(f) for f in features})
    if not feats:
        return {}, {}
    rows = con.execute("""SELECT e.feature, e.rank, e.sample, s.sample_id, e.image_index, i.width, i.height, m.ords, m.acts
        FROM examples e LEFT JOIN samples s ON s.sample = e.sample
        LEFT JOIN images i ON i.sample = e.sample AND i.image_index = e.image_index
        LEFT JOIN patch_maps m ON m.feature = e.feature AND m.rank = e.rank
        WHERE e.feature IN (SELECT unnest(?::INTEGER[]))
        QUALIFY row_number() OVER (PARTITION BY e.feature ORDER BY e.rank) <= ?
        ORDER BY e.feature, e.rank""", [feats, n if n is not None else 2**31 - 1]).fetchall()
    geometry = _geometry(con, {(r[2], r[4]) for r in rows})
    tops: dict[int, list[TopImage]] = {}
    problems: dict[int, str] = {}
    for feature, rank, sample, sample_id, image_index, width, height, ords, acts in rows:
        if feature in problems:
            continue
        where = f"rank {rank} (sample {sample} image {image_index})"
        box_N4 = geometry.get((sample, image_index))
        if box_N4 is None or width is None or height is None:
            problems[feature] = f"{where}: no rows in image_patches/images for it"
            continue
        act_N = np.zeros(len(box_N4), np.float32)
        if ords:
            ord_M = np.asarray(ords, np.int64)
            if len(ords) != len(acts or []) or ord_M.min() < 0 or ord_M.max() >= len(box_N4):
                problems[feature] = f"{where}: its patch map does not fit the image's {len(box_N4)} tokens"
                continue
            act_N[ord_M] = np.asarray(acts, np.float32)
        tops.setdefault(feature, []).append(TopImage(feature, rank, sample, sample_id or str(sample), image_index,
                                                     int(width), int(height), box_N4, act_N))
    for f in problems:
        tops.pop(f, None)
    return tops, problems


def _geometry(con, images: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    if not images:
        return {}
    samples, indices = zip(*sorted(images))
    rows = con.execute("""SELECT p.sample, p.image_index, p.ord, p.x0, p.y0, p.x1, p.y1 FROM image_patches p
        JOIN (SELECT unnest(?::INTEGER[]) AS sample, unnest(?::INTEGER[]) AS image_index) k USING (sample, image_index)
        ORDER BY p.sample, p.image_index, p.ord""", [list(samples), list(indices)]).fetchall()
    grouped: dict[tuple[int, int], list] = {}
    for s, j, o, *box in rows:
        grouped.setdefault((s, j), []).append((o, [np.nan if v is None else v for v in box]))
    out = {}
    for key, items in grouped.items():
        box_N4 = np.full((max(o for o, _ in items) + 1, 4), np.nan)
        for o, box in items:
            box_N4[o] = box
        out[key] = box_N4
    return out


def sample_ids(con, samples: list[int]) -> dict[int, str]:
    rows = con.execute("SELECT sample, sample_id FROM samples WHERE sample IN (SELECT unnest(?::INTEGER[]))",
                       [sorted({int(s) for s in samples})]).fetchall()
    return dict(rows)


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
