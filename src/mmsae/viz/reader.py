"""A small reader of the feature index (DuckDB, schema in the shared index contract): top images with
their per-patch activation maps, and the images themselves from the indexed data source.

Kept apart from the drawing code, which only sees arrays and PIL images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .sheet import TopImage, feature_sheet

INDEX_FILE = "index.duckdb"


def connect(index_dir: str | Path, read_only: bool = True):
    """A DuckDB connection to <index_dir>/index.duckdb; a clear error when there is none."""
    import duckdb

    path = Path(index_dir) / INDEX_FILE
    if not path.exists():
        raise FileNotFoundError(f"no feature index at {index_dir} ({INDEX_FILE} missing; build it with `mmsae index`)")
    return duckdb.connect(str(path), read_only=read_only)


def read_meta(con) -> dict:
    """meta as a dict; values are JSON (a value that is not JSON is kept as its string)."""
    out = {}
    for key, value in con.execute("SELECT key, value FROM meta").fetchall():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def known_features(con, features: list[int]) -> set[int]:
    rows = con.execute("SELECT feature FROM features WHERE feature IN (SELECT unnest(?::INTEGER[]))",
                       [list(map(int, features))]).fetchall()
    return {r[0] for r in rows}


def read_top_images(con, features: list[int], n: int | None = None) -> tuple[dict[int, list[TopImage]], dict[int, str]]:
    """The n strongest top images of each feature with dense per-token activation maps.

    Returns (tops, problems): a feature whose rows are inconsistent (a map pointing past its image's
    tokens, an image without geometry) is left out of tops and named in problems with the reason, so a
    caller working through many features goes on with the rest."""
    feats = sorted({int(f) for f in features})
    if not feats:
        return {}, {}
    rows = con.execute(
        """SELECT e.feature, e.rank, e.sample, s.sample_id, e.image_index, e.max_act, e.score,
                  m.ords, m.acts, i.width, i.height
           FROM examples e
           LEFT JOIN samples s ON s.sample = e.sample
           LEFT JOIN patch_maps m ON m.feature = e.feature AND m.rank = e.rank
           LEFT JOIN images i ON i.sample = e.sample AND i.image_index = e.image_index
           WHERE e.feature IN (SELECT unnest(?::INTEGER[]))
           QUALIFY row_number() OVER (PARTITION BY e.feature ORDER BY e.rank) <= ?
           ORDER BY e.feature, e.rank""",
        [feats, n if n is not None else 2**31 - 1],
    ).fetchall()
    geometry = _read_geometry(con, {(r[2], r[4]) for r in rows})
    tops: dict[int, list[TopImage]] = {}
    problems: dict[int, str] = {}
    for feature, rank, sample, sample_id, image_index, max_act, score, ords, acts, width, height in rows:
        if feature in problems:
            continue
        box_N4 = geometry.get((sample, image_index))
        if box_N4 is None:
            problems[feature] = f"rank {rank}: sample {sample} image {image_index} has no rows in image_patches"
            continue
        act_N = np.zeros(len(box_N4), dtype=np.float32)
        if ords:
            ord_M = np.asarray(ords, dtype=np.int64)
            if ord_M.min() < 0 or ord_M.max() >= len(box_N4) or len(ords) != len(acts or []):
                problems[feature] = (f"rank {rank}: patch map of sample {sample} image {image_index} does not fit its "
                                     f"{len(box_N4)} image tokens (ords {ord_M.min()}..{ord_M.max()}, {len(acts or [])} acts)")
                continue
            act_N[ord_M] = np.asarray(acts, dtype=np.float32)
        tops.setdefault(feature, []).append(TopImage(
            feature, rank, sample, sample_id if sample_id is not None else str(sample), image_index,
            float(max_act), float(score if score is not None else max_act), box_N4, act_N, width, height))
    for f in problems:
        tops.pop(f, None)
    return tops, problems


def _read_geometry(con, images: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    if not images:
        return {}
    samples, indices = zip(*sorted(images))
    cols = con.execute(
        """SELECT p.sample, p.image_index, p.ord, p.x0, p.y0, p.x1, p.y1
           FROM image_patches p
           JOIN (SELECT unnest(?::INTEGER[]) AS sample, unnest(?::INTEGER[]) AS image_index) k
             ON p.sample = k.sample AND p.image_index = k.image_index
           ORDER BY p.sample, p.image_index, p.ord""",
        [list(samples), list(indices)],
    ).fetchnumpy()
    if not len(cols["ord"]):
        return {}
    keys_M2 = np.stack([np.asarray(cols["sample"]), np.asarray(cols["image_index"])], axis=1)
    box_M4 = np.stack([_floats(cols[c]) for c in ("x0", "y0", "x1", "y1")], axis=1)
    ord_M = np.asarray(cols["ord"])
    out = {}
    starts = np.flatnonzero(np.r_[True, np.any(keys_M2[1:] != keys_M2[:-1], axis=1)])
    for a, b in zip(starts, np.r_[starts[1:], len(ord_M)]):
        n = int(ord_M[a:b].max()) + 1
        box_N4 = np.full((n, 4), np.nan)
        box_N4[ord_M[a:b]] = box_M4[a:b]  # NULL boxes (tokens covering no pixel) arrive as NaN
        out[(int(keys_M2[a, 0]), int(keys_M2[a, 1]))] = box_N4
    return out


def _floats(col) -> np.ndarray:
    """A DOUBLE column as float64 with NULL as NaN (DuckDB hands NULLs over as a masked array)."""
    if isinstance(col, np.ma.MaskedArray):
        return col.astype(np.float64).filled(np.nan)
    return np.asarray(col, dtype=np.float64)


def open_index_source(meta: dict, source=None):
    """The data source the index was built from (meta.data, meta.prompt), or `source` instead: a spec
    string (e.g. the same data at a new path) or an already opened Source."""
    from ..data import open_source

    if source is not None and not isinstance(source, str):
        return source
    spec = source or meta.get("data")
    if not spec:
        raise ValueError("the index meta has no 'data' source spec; pass the source explicitly")
    kwargs = {}
    if meta.get("max_pixels"):
        kwargs["max_pixels"] = int(meta["max_pixels"])
    return open_source(str(spec), prompt=meta.get("prompt"), **kwargs)


def load_image(source, top: TopImage) -> Image.Image:
    """The original image of a top image; a clear error naming the sample when the source disagrees."""
    record = source.record(top.sample)
    if record.id != top.sample_id:
        raise ValueError(f"sample {top.sample}: the source has id {record.id!r} where the index has "
                         f"{top.sample_id!r} (not the indexed data?)")
    if not 0 <= top.image_index < len(record.images):
        raise ValueError(f"sample {top.sample} ({top.sample_id}) has {len(record.images)} images; "
                         f"the index refers to image {top.image_index}")
    image = record.images[top.image_index]
    if top.width is not None and top.height is not None and image.size != (top.width, top.height):
        raise ValueError(f"sample {top.sample} ({top.sample_id}) image {top.image_index} is "
                         f"{image.size[0]}x{image.size[1]} in the source but {top.width}x{top.height} in the index")
    return image


def feature_sheet_from_index(index_dir: str | Path, feature: int, source=None, n: int | None = None,
                             **sheet_options) -> Image.Image:
    """The contact sheet of one feature read from an index (top images: original | heatmap | masked)."""
    con = connect(index_dir)
    try:
        if not known_features(con, [feature]):
            n_latents = con.execute("SELECT count(*) FROM features").fetchone()[0]
            raise ValueError(f"feature {feature} is not in the index at {index_dir} ({n_latents} features)")
        meta = read_meta(con)
        tops, problems = read_top_images(con, [feature], n)
        stats = con.execute("SELECT frequency, max_act, image_share FROM features WHERE feature = ?",
                            [feature]).fetchone()
    finally:
        con.close()
    if feature in problems:
        raise ValueError(f"feature {feature}: {problems[feature]}")
    examples = tops.get(feature, [])
    src = open_index_source(meta, source)
    images = [load_image(src, t) for t in examples]
    freq, max_act, share = stats
    title = (f"feature {feature}  freq {freq or 0:.3g}  max {max_act or 0:.3g}  image share {share or 0:.2f}  "
             f"layer {meta.get('layer', '?')}")
    return feature_sheet(examples, images, title=title, **sheet_options)
