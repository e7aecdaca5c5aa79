"""Typed readers over an index (what explain, score and viz need), and `open_index`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np

from .db import INDEX_FILE

ORDERS = {"n_fires": "n_fires DESC", "max_act": "max_act DESC", "frequency": "frequency DESC",
          "mean_act": "mean_act DESC", "feature": "feature"}


def open_index(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to `<dir>/index.duckdb` (or to the file itself)."""
    path = Path(path)
    file = path / INDEX_FILE if path.is_dir() or path.suffix != ".duckdb" else path
    if not file.is_file():
        raise FileNotFoundError(f"no feature index at {file} (build one with `mmsae index`)")
    return duckdb.connect(str(file), read_only=read_only)


def read_meta(con: duckdb.DuckDBPyConnection) -> dict:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta ORDER BY key").fetchall()}


@dataclass
class FeatureStats:
    feature: int
    n_fires: int
    n_image_fires: int
    n_text_fires: int
    n_special_fires: int
    frequency: float  # fires / all tokens seen (special tokens included)
    mean_act: float  # over the tokens it fires on; 0 for a dead feature
    max_act: float
    image_share: float | None  # image fires / (image + text fires); None when it never fired on either
    n_examples: int  # top images kept (<= top_n)


_STATS_SQL = """SELECT f.feature, f.n_fires, f.n_image_fires, f.n_text_fires, f.n_special_fires, f.frequency,
    f.mean_act, f.max_act, f.image_share, coalesce(e.n, 0) AS n_examples FROM features f
    LEFT JOIN (SELECT feature, count(*) AS n FROM examples GROUP BY feature) e USING (feature)"""


def feature_stats(con, feature: int) -> FeatureStats:
    row = con.execute(f"SELECT * FROM ({_STATS_SQL}) s WHERE feature = ?", [int(feature)]).fetchone()
    if row is None:
        n = con.execute("SELECT count(*) FROM features").fetchone()[0]
        raise KeyError(f"feature {feature} is not in the index (it has features 0..{n - 1})")
    return FeatureStats(*row)


def top_features(con, min_fires: int = 1, min_examples: int = 0, order_by: str = "n_fires",
                 limit: int | None = None, min_image_share: float | None = None) -> list[FeatureStats]:
    """Features with at least `min_fires` fires and `min_examples` top images, best first by
    `order_by` (n_fires | max_act | frequency | mean_act | feature), ties by feature id."""
    if order_by not in ORDERS:
        raise ValueError(f"order_by must be one of {sorted(ORDERS)}, got {order_by!r}")
    sql = f"SELECT * FROM ({_STATS_SQL}) s WHERE n_fires >= ? AND n_examples >= ?"
    args: list = [int(min_fires), int(min_examples)]
    if min_image_share is not None:
        sql += " AND image_share >= ?"
        args.append(float(min_image_share))
    sql += f" ORDER BY {ORDERS[order_by]}, feature"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [FeatureStats(*row) for row in con.execute(sql, args).fetchall()]


@dataclass
class Example:
    """One top image of a feature, with its activation map over all the image's tokens (every tile)."""

    feature: int
    rank: int  # 0 = strongest
    sample: int  # record index in the source
    sample_id: str
    image_index: int  # which image of the sample
    max_act: float
    mean_act: float  # over all the image's tokens
    score: float  # the ranking value (max_act or mean_act)
    width: int  # original image size in pixels
    height: int
    acts: np.ndarray  # float32 [P]: activation on each image token, in sequence order (ord)
    tile: np.ndarray  # int32 [P]
    patch_row: np.ndarray  # int32 [P]
    patch_col: np.ndarray  # int32 [P]
    box: np.ndarray  # float64 [P, 4]: x0 y0 x1 y1 in original pixels, NaN for pure padding

    def active_boxes(self, threshold: float = 0.0) -> np.ndarray:
        """Boxes of the patches whose activation is above `threshold` (and that cover pixels)."""
        keep = (self.acts > threshold) & ~np.isnan(self.box).any(1)
        return self.box[keep]


def feature_examples(con, feature: int, limit: int | None = None) -> list[Example]:
    """The top images of `feature`, strongest first, with dense patch maps reconstructed."""
    sql = """SELECT e.rank, e.sample, s.sample_id, e.image_index, e.max_act, e.mean_act, e.score, i.width,
        i.height, i.n_patches, m.ords, m.acts FROM examples e
        JOIN samples s USING (sample) JOIN images i USING (sample, image_index)
        LEFT JOIN patch_maps m ON m.feature = e.feature AND m.rank = e.rank
        WHERE e.feature = ? ORDER BY e.rank"""
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    out = []
    for rank, sample, sid, image_index, mx, mean, score, w, h, n_patches, ords, acts in con.execute(
            sql, [int(feature)]).fetchall():
        geo = con.execute("""SELECT tile, patch_row, patch_col, x0, y0, x1, y1 FROM image_patches
            WHERE sample = ? AND image_index = ? ORDER BY ord""", [sample, image_index]).fetchnumpy()
        dense = np.zeros(n_patches, np.float32)
        if ords:
            dense[np.asarray(ords, np.int64)] = np.asarray(acts, np.float32)
        box = np.stack([np.ma.filled(np.ma.asarray(geo[c], np.float64), np.nan) for c in ("x0", "y0", "x1", "y1")],
                       axis=1) if n_patches else np.zeros((0, 4))
        out.append(Example(feature, rank, sample, sid, image_index, mx, mean, score, w, h, dense,
                           *(np.asarray(geo[c], np.int32) for c in ("tile", "patch_row", "patch_col")), box))
    return out


@dataclass
class TextContext:
    feature: int
    rank: int
    sample: int
    sample_id: str
    position: int  # in the sequence, from its first token
    token: str
    activation: float
    context: str  # a window around the token, which is marked <<tok>>


def text_contexts(con, feature: int, limit: int | None = None) -> list[TextContext]:
    sql = """SELECT t.feature, t.rank, t.sample, s.sample_id, t.position, t.token, t.activation, t.context
        FROM text_contexts t JOIN samples s USING (sample) WHERE t.feature = ? ORDER BY t.rank"""
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [TextContext(*row) for row in con.execute(sql, [int(feature)]).fetchall()]
