"""The index's cross-modal weights (SAE-V): table `crossmodal(feature, weight, n_text, n_image)` and the
meta row `crossmodal` (a JSON object: the parameters and counts of the run that wrote them).

`weight` is NULL for a feature whose top-K tokens hold fewer than the minimum of text or image tokens.
This module owns that table's SQL (its DDL is in db.TABLES); `mmsae.saev.crossmodal` computes the weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .db import create_tables, has_table, transaction
from .read import open_index

META_KEY = "crossmodal"
NO_WEIGHTS = ("the index has no cross-modal weights; compute them with `mmsae crossmodal --index DIR` "
              "(mmsae.saev.crossmodal.run_crossmodal)")


def write_crossmodal(index: str | Path, weight_F: np.ndarray, n_text_F: np.ndarray, n_image_F: np.ndarray,
                     meta: dict) -> None:
    """Replace the index's cross-modal table and meta row in one transaction (NaN weight -> NULL)."""
    w = np.asarray(weight_F, np.float64)
    con = open_index(index, read_only=False)
    try:
        create_tables(con, "crossmodal")
        with transaction(con):
            con.execute("DELETE FROM crossmodal")
            con.execute("INSERT INTO crossmodal SELECT unnest(?::INTEGER[]), unnest(?::DOUBLE[]), "
                        "unnest(?::INTEGER[]), unnest(?::INTEGER[])",
                        [list(range(len(w))), [None if np.isnan(x) else float(x) for x in w],
                         [int(x) for x in n_text_F], [int(x) for x in n_image_F]])
            con.execute("DELETE FROM meta WHERE key = ?", [META_KEY])
            con.execute("INSERT INTO meta VALUES (?, ?)", [META_KEY, json.dumps(meta, sort_keys=True)])
    finally:
        con.close()


def has_crossmodal(con) -> bool:
    return has_table(con, "crossmodal")


def weights_subquery(con) -> str:
    """SQL for (feature, crossmodal weight) to join on: NULL where the feature has too few text or image tokens
    among its top tokens; no rows when `mmsae crossmodal` never ran on the index."""
    if not has_crossmodal(con):
        return "(SELECT NULL::INTEGER AS feature, NULL::DOUBLE AS crossmodal LIMIT 0)"
    return "(SELECT feature, weight AS crossmodal FROM crossmodal)"


def feature_crossmodal(con, feature: int) -> dict | None:
    """{weight (None: too few text or image tokens among its top tokens), n_text, n_image} of one feature;
    None when `mmsae crossmodal` never ran on the index."""
    if not has_crossmodal(con):
        return None
    row = con.execute("SELECT weight, n_text, n_image FROM crossmodal WHERE feature = ?", [int(feature)]).fetchone()
    return None if row is None else {"weight": row[0], "n_text": row[1], "n_image": row[2]}


def crossmodal_meta(con) -> dict | None:
    row = con.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchone()
    return json.loads(row[0]) if row else None


def read_crossmodal(con) -> dict[str, np.ndarray]:
    """feature, weight (NaN = null), n_text, n_image as arrays over all features; a clear error saying how
    to compute them when the index has none."""
    if not has_crossmodal(con):
        raise ValueError(NO_WEIGHTS)
    cols = con.execute("SELECT feature, weight, n_text, n_image FROM crossmodal ORDER BY feature").fetchnumpy()
    return {"feature": np.asarray(cols["feature"], np.int64),
            "weight": np.asarray(np.ma.filled(np.ma.asarray(cols["weight"], np.float64), np.nan), np.float64),
            "n_text": np.asarray(cols["n_text"], np.int64), "n_image": np.asarray(cols["n_image"], np.int64)}


def crossmodal_weights(con, n_latents: int | None = None) -> np.ndarray:
    """weight [F] with NaN for null (and for features missing from the table)."""
    cols = read_crossmodal(con)
    n = int(n_latents if n_latents is not None else (cols["feature"].max() + 1 if len(cols["feature"]) else 0))
    w = np.full(n, np.nan)
    inside = cols["feature"] < n
    w[cols["feature"][inside]] = cols["weight"][inside]
    return w


def top_crossmodal(con, limit: int = 10) -> list[dict]:
    """The most cross-modal features (highest weight first, ties by id), with their latest explanation
    when the index has one."""
    if not has_crossmodal(con):
        raise ValueError(NO_WEIGHTS)
    has_expl = bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'explanations'")
                    .fetchone()[0])
    expl = ("(SELECT explanation FROM explanations e WHERE e.feature = c.feature AND e.explanation IS NOT NULL "
            "ORDER BY created DESC LIMIT 1)") if has_expl else "NULL"
    rows = con.execute(f"SELECT feature, weight, n_text, n_image, {expl} FROM crossmodal c WHERE weight IS NOT NULL "
                       f"ORDER BY weight DESC, feature LIMIT {int(limit)}").fetchall()
    return [dict(zip(("feature", "weight", "n_text", "n_image", "explanation"), r)) for r in rows]


def export_parquet(con, path: str | Path) -> Path:
    """feature, weight, n_text, n_image as a Parquet file (written atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mmsae.store.files import atomic_path

    cols = read_crossmodal(con)
    w = cols["weight"]
    table = pa.table({"feature": pa.array(cols["feature"], pa.int32()),
                      "weight": pa.array(w, pa.float64(), mask=np.isnan(w)),
                      "n_text": pa.array(cols["n_text"], pa.int32()), "n_image": pa.array(cols["n_image"], pa.int32())})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
