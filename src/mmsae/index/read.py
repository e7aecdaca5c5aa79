"""Typed readers over a feature index's features, top images and contexts (the explain and score stages'
rows are read in results.py), and open_index, which checks the schema version.

Feature statistics and selection, top images with their dense patch maps (one feature, or many in a
few queries), text contexts, and the indexed data source with the checked original images.

Only the shared contract's columns are read, so an index built by hand to the contract reads as well
as one built by `mmsae index` (its extra columns, n_special_fires and n_patches, are derived here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image

from .db import INDEX_FILE, check_schema

ORDERS = {"n_fires": "n_fires DESC", "max_act": "max_act DESC", "frequency": "frequency DESC",
          "mean_act": "mean_act DESC", "feature": "feature"}
FEATURES_PER_QUERY = 1024  # feature_examples_many reads this many features per pair of queries


def index_file(path: str | Path) -> Path:
    """`<dir>/index.duckdb` for an index directory, or the file itself."""
    path = Path(path)
    return path / INDEX_FILE if path.is_dir() or path.suffix != ".duckdb" else path


def open_index(path: str | Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to `<dir>/index.duckdb` (or to the file itself), checked to be of this schema version."""
    file = index_file(path)
    if not file.is_file():
        raise FileNotFoundError(f"no feature index at {file} (build one with `mmsae index`)")
    con = duckdb.connect(str(file), read_only=read_only)
    try:
        check_schema(con, file)
    except BaseException:
        con.close()
        raise
    return con


def read_meta(con: duckdb.DuckDBPyConnection) -> dict:
    """meta as a dict of JSON values (a value written by hand that is not JSON is kept as its string)."""
    out = {}
    for key, value in con.execute("SELECT key, value FROM meta ORDER BY key").fetchall():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def feature_counts(con) -> tuple[int, int]:
    """(features that fired at least once, features with at least one top image)."""
    live, with_examples = con.execute(
        "SELECT count(*) FILTER (n_fires > 0), (SELECT count(DISTINCT feature) FROM examples) FROM features"
    ).fetchone()
    return int(live), int(with_examples)


def has_feature(con, feature: int) -> bool:
    return bool(con.execute("SELECT count(*) FROM features WHERE feature = ?", [int(feature)]).fetchone()[0])


def feature_ids(con, min_fires: int = 0) -> list[int]:
    """The index's feature ids with at least `min_fires` fires, ascending."""
    return [r[0] for r in con.execute("SELECT feature FROM features WHERE n_fires >= ? ORDER BY feature",
                                      [int(min_fires)]).fetchall()]


def feature_max_acts(con) -> dict[int, float]:
    """feature -> its largest activation (0 for a dead feature)."""
    return {f: float(m or 0.0) for f, m in con.execute("SELECT feature, max_act FROM features").fetchall()}


def require_features(con, features) -> None:
    """A clear error naming the feature ids that the index does not have."""
    wanted = sorted({int(f) for f in features})
    known = {r[0] for r in con.execute("SELECT feature FROM features WHERE feature IN (SELECT unnest(?::INTEGER[]))",
                                       [wanted]).fetchall()}
    missing = [f for f in wanted if f not in known]
    if missing:
        n = con.execute("SELECT count(*) FROM features").fetchone()[0]
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        what = f"feature {shown} is" if len(missing) == 1 else f"features {shown} are"
        raise ValueError(f"{what} not in the index (it has {n} features: 0..{n - 1})")


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


# Every fire is on an image, text or special token, so the special fires are what the other two leave.
_STATS_SQL = """SELECT f.feature, f.n_fires, f.n_image_fires, f.n_text_fires,
    f.n_fires - f.n_image_fires - f.n_text_fires AS n_special_fires, f.frequency, f.mean_act, f.max_act,
    f.image_share, coalesce(e.n, 0) AS n_examples FROM features f
    LEFT JOIN (SELECT feature, count(*) AS n FROM examples GROUP BY feature) e USING (feature)"""


def feature_stats(con, feature: int) -> FeatureStats:
    require_features(con, [feature])
    return FeatureStats(*con.execute(f"SELECT * FROM ({_STATS_SQL}) s WHERE feature = ?", [int(feature)]).fetchone())


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
    score: float  # the ranking value (max_act or mean_act, see meta.rank_by)
    width: int  # original image size in pixels
    height: int
    acts: np.ndarray  # float32 [P]: activation on each image token, in sequence order (ord); 0 where none
    tile: np.ndarray  # int32 [P]
    patch_row: np.ndarray  # int32 [P]
    patch_col: np.ndarray  # int32 [P]
    box: np.ndarray  # float64 [P, 4]: x0 y0 x1 y1 in original pixels, NaN for pure padding

    def active_boxes(self, threshold: float = 0.0) -> np.ndarray:
        """Boxes of the patches whose activation is above `threshold` (and that cover pixels)."""
        keep = (self.acts > threshold) & ~np.isnan(self.box).any(1)
        return self.box[keep]


_EXAMPLES_SQL = """SELECT e.feature, e.rank, e.sample, s.sample_id, e.image_index, e.max_act, e.mean_act, e.score,
    i.width, i.height, m.ords, m.acts FROM examples e
    LEFT JOIN samples s ON s.sample = e.sample
    LEFT JOIN images i ON i.sample = e.sample AND i.image_index = e.image_index
    LEFT JOIN patch_maps m ON m.feature = e.feature AND m.rank = e.rank
    WHERE e.feature IN (SELECT unnest(?::INTEGER[]))
    QUALIFY row_number() OVER (PARTITION BY e.feature ORDER BY e.rank) <= ?
    ORDER BY e.feature, e.rank"""


def feature_examples_many(con, features, n: int | None = None,
                          problems: dict[int, str] | None = None) -> dict[int, list[Example]]:
    """The n strongest top images of each feature (all with n=None), strongest first, with dense maps:
    feature -> examples for every asked feature (an empty list when it has none), read with one
    examples query and one geometry query per FEATURES_PER_QUERY features.

    A feature whose rows do not fit together (a map past its image's tokens, an image without geometry,
    size or sample row) raises ValueError naming it and the reason; when a `problems` dict is given it
    is left out of the result and its reason recorded there instead, so a batch goes on with the rest."""
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0 or None; got {n}")
    wanted = list(dict.fromkeys(int(f) for f in features))
    found: dict[int, str] = {}
    out: dict[int, list[Example]] = {f: [] for f in wanted}
    for lo in range(0, len(wanted), FEATURES_PER_QUERY):
        chunk = sorted(wanted[lo:lo + FEATURES_PER_QUERY])
        rows = con.execute(_EXAMPLES_SQL, [chunk, 2**31 - 1 if n is None else int(n)]).fetchall()
        geometry = _geometry(con, {(r[2], r[4]) for r in rows})
        for row in rows:
            feature = row[0]
            if feature not in found:
                example = _example(row, geometry)
                if isinstance(example, str):
                    found[feature] = example
                else:
                    out[feature].append(example)
    if found and problems is None:
        f = min(found)
        raise ValueError(f"feature {f}: {found[f]}")
    for f, reason in found.items():
        problems[f] = reason
        del out[f]
    return out


def feature_examples(con, feature: int, limit: int | None = None) -> list[Example]:
    """The top images of `feature`, strongest first, with dense patch maps (ValueError when its rows
    do not fit together)."""
    return feature_examples_many(con, [feature], limit)[int(feature)]


def _example(row, geometry) -> Example | str:
    """The Example of one examples row, or the reason it cannot be read."""
    feature, rank, sample, sample_id, image_index, mx, mean, score, width, height, ords, acts = row
    where = f"rank {rank}: sample {sample} image {image_index}"
    geo = geometry.get((sample, image_index))
    if geo is None:
        return f"{where} has no rows in image_patches"
    if width is None or height is None:
        return f"{where} has no row in images (its size)"
    if sample_id is None:
        return f"{where} has no row in samples"
    tile, patch_row, patch_col, box = geo
    dense = np.zeros(len(box), np.float32)
    if ords:
        ord_M = np.asarray(ords, np.int64)
        if ord_M.min() < 0 or ord_M.max() >= len(box) or len(ords) != len(acts or []):
            return (f"{where}: its patch map does not fit the image's {len(box)} image tokens "
                    f"(ords {ord_M.min()}..{ord_M.max()}, {len(acts or [])} acts)")
        dense[ord_M] = np.asarray(acts, np.float32)
    return Example(feature, rank, sample, sample_id, image_index, mx, mean, mx if score is None else score,
                   int(width), int(height), dense, tile, patch_row, patch_col, box)


def _geometry(con, images: set[tuple[int, int]]) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """(sample, image_index) -> (tile, patch_row, patch_col, box) over ord 0..P-1, in one query."""
    if not images:
        return {}
    samples, indices = zip(*sorted(images))
    cols = con.execute("""SELECT p.sample, p.image_index, p.ord, p.tile, p.patch_row, p.patch_col,
        p.x0, p.y0, p.x1, p.y1 FROM image_patches p JOIN (SELECT unnest(?::INTEGER[]) AS sample, unnest(?::INTEGER[]) AS image_index) k
        USING (sample, image_index) ORDER BY p.sample, p.image_index, p.ord""",
                       [list(samples), list(indices)]).fetchnumpy()
    ord_M = _filled(cols["ord"], np.int64, -1)
    if not len(ord_M):
        return {}
    key_M2 = np.stack([_filled(cols["sample"], np.int64, -1), _filled(cols["image_index"], np.int64, -1)], axis=1)
    grid_M3 = np.stack([_filled(cols[c], np.int32, -1) for c in ("tile", "patch_row", "patch_col")], axis=1)
    box_M4 = np.stack([_filled(cols[c], np.float64, np.nan) for c in ("x0", "y0", "x1", "y1")], axis=1)
    starts = np.flatnonzero(np.r_[True, np.any(key_M2[1:] != key_M2[:-1], axis=1)])
    out = {}
    for a, b in zip(starts, np.r_[starts[1:], len(ord_M)]):
        o = ord_M[a:b]
        if o.min() < 0:
            continue  # a NULL ord: no usable geometry, reported as missing
        n = int(o.max()) + 1
        grid_N3, box_N4 = np.full((n, 3), -1, np.int32), np.full((n, 4), np.nan)
        grid_N3[o], box_N4[o] = grid_M3[a:b], box_M4[a:b]
        out[(int(key_M2[a, 0]), int(key_M2[a, 1]))] = (grid_N3[:, 0], grid_N3[:, 1], grid_N3[:, 2], box_N4)
    return out


def _filled(col, dtype, fill) -> np.ndarray:
    """A column as `dtype` with NULLs as `fill` (DuckDB hands NULLs over as a masked array)."""
    return np.asarray(np.ma.filled(col, fill), dtype)


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


def resolve_paths(meta: dict, index_dir: str | Path) -> dict:
    """meta with its `model` and `sae` paths usable here: as recorded when they exist, else the same
    path relative to the index (meta's `*_relpath`), for an index that moved together with them (e.g. a
    directory written under a temporary name and renamed). Callers check fingerprints before use."""
    out = dict(meta)
    for key in ("model", "sae"):
        rel = meta.get(f"{key}_relpath")
        if meta.get(key) and not Path(str(meta[key])).exists() and rel and (Path(index_dir) / rel).exists():
            out[key] = str((Path(index_dir) / rel).resolve())
    return out


def index_source(meta: dict, source=None):
    """The data source the index was built from (meta's data spec, prompt and max_pixels when recorded),
    or `source` instead: a spec string (e.g. the same data at a new path, opened with meta's prompt) or
    an already opened Source."""
    from ..data import open_source

    if source is not None and not isinstance(source, str):
        return source
    spec = source or meta.get("data")
    if not spec:
        raise ValueError("the index meta has no 'data' source spec; pass the source explicitly")
    kwargs = {"max_pixels": int(meta["max_pixels"])} if meta.get("max_pixels") else {}
    return open_source(str(spec), prompt=meta.get("prompt"), **kwargs)


def example_image(source, example) -> Image.Image:
    """The original image of an example (anything with sample, sample_id, image_index, width, height),
    checked against the index: a clear error naming the sample when the source disagrees."""
    record = source.record(example.sample)
    where = f"sample {example.sample} ({example.sample_id})"
    if record.id != example.sample_id:
        raise ValueError(f"sample {example.sample}: the source has id {record.id!r} where the index has "
                         f"{example.sample_id!r} (not the indexed data?)")
    if not 0 <= example.image_index < len(record.images):
        raise ValueError(f"{where} has {len(record.images)} images; the index refers to image {example.image_index}")
    image = record.images[example.image_index]
    if image.size != (example.width, example.height):
        raise ValueError(f"{where} image {example.image_index} is {image.size[0]}x{image.size[1]} in the source "
                         f"but {example.width}x{example.height} in the index")
    return image
