"""The index's DuckDB file: the one declaration of its tables and schema version, and the one-shot write at
the end of a build.

Beyond the shared contract: `features.n_special_fires` (fires on BOS, separators, image newlines...;
counted in n_fires and frequency but not in image_share), `images.n_patches` (image tokens of the
image), and NULL box coordinates for patches that cover no original pixel (pure padding).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch

from .state import IMAGE_MARK, NO_TOKEN, IndexState, split_image_key, split_text_key

INDEX_FILE = "index.duckdb"
# Bumped on any change to the tables below; open_index refuses an index of another version. 1 was the
# unversioned schema (meta.format "mmsae-index/1"), which had no schema_version row.
SCHEMA_VERSION = 2
VERSION_KEY = "schema_version"

# The one declaration of every table of index.duckdb: name -> columns. `mmsae index` creates the build's
# tables; explanations and scores are also created on first write (an index built by hand may lack them);
# crossmodal is written by `mmsae crossmodal`.
TABLES = {
    "meta": "key VARCHAR PRIMARY KEY, value VARCHAR",
    "features": "feature INTEGER PRIMARY KEY, n_fires BIGINT, n_image_fires BIGINT, n_text_fires BIGINT, "
                "frequency DOUBLE, mean_act DOUBLE, max_act DOUBLE, image_share DOUBLE, n_special_fires BIGINT",
    "samples": "sample INTEGER PRIMARY KEY, sample_id VARCHAR, n_images INTEGER, text VARCHAR",
    "examples": "feature INTEGER, rank INTEGER, sample INTEGER, image_index INTEGER, max_act DOUBLE, "
                "mean_act DOUBLE, score DOUBLE",
    "images": "sample INTEGER, image_index INTEGER, width INTEGER, height INTEGER, n_patches INTEGER",
    "image_patches": "sample INTEGER, image_index INTEGER, ord INTEGER, tile INTEGER, patch_row INTEGER, "
                     "patch_col INTEGER, x0 DOUBLE, y0 DOUBLE, x1 DOUBLE, y1 DOUBLE",
    "patch_maps": "feature INTEGER, rank INTEGER, ords INTEGER[], acts FLOAT[]",
    "text_contexts": "feature INTEGER, rank INTEGER, sample INTEGER, position INTEGER, token VARCHAR, "
                     "activation DOUBLE, context VARCHAR",
    "explanations": "feature INTEGER, status VARCHAR, explanation VARCHAR, raw VARCHAR, reason VARCHAR, "
                    "model VARCHAR, prompt_version VARCHAR, created DOUBLE",
    "scores": "feature INTEGER, metric VARCHAR, value DOUBLE, concept_class VARCHAR, details VARCHAR, "
              "model VARCHAR, created DOUBLE",
    "crossmodal": "feature INTEGER PRIMARY KEY, weight DOUBLE, n_text INTEGER, n_image INTEGER",
}
BUILD_TABLES = ("meta", "features", "samples", "examples", "images", "image_patches", "patch_maps",
                "text_contexts", "explanations", "scores")


def ddl(table: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {table}({TABLES[table]})"


SCHEMA = "".join(f"{ddl(t)};\n" for t in BUILD_TABLES)


def create_tables(con, *tables: str) -> None:
    for t in tables:
        con.execute(ddl(t))


def has_table(con, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                            [name]).fetchone()[0])


def _version_value(con) -> str | None:
    if not has_table(con, "meta"):
        return None
    row = con.execute("SELECT value FROM meta WHERE key = ?", [VERSION_KEY]).fetchone()
    return row[0] if row else None


def schema_version(con) -> int | None:
    """The index's schema version; None when it has none (an index from before versions, no meta table) or
    one that is not an integer."""
    try:
        return int(json.loads(_version_value(con)))
    except (TypeError, ValueError):
        return None


def check_schema(con, file: Path) -> None:
    """ValueError naming the file, the version found and the one expected when they differ."""
    if schema_version(con) != SCHEMA_VERSION:
        raw = _version_value(con)
        what = ("no schema version (built before versions were recorded)" if raw is None
                else f"schema version {raw}")
        raise ValueError(f"the feature index {file} has {what}; this mmsae reads schema version {SCHEMA_VERSION}: "
                         f"rebuild it with `mmsae index` (remove {file.name} first, or use a new --out), then "
                         f"rerun explain and score on it")


@contextmanager
def transaction(con):
    """All or nothing: a write killed or failing midway leaves the index as it was."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


# Per-chunk Parquet files (under the build's state dir) that the final write selects from.
CHUNK_TABLES = ("samples", "images", "patches")
CHUNK_SCHEMAS = {
    "samples": pa.schema([("sample", pa.int64()), ("sample_id", pa.string()), ("n_images", pa.int32()),
                          ("text", pa.string())]),
    "images": pa.schema([("sample", pa.int64()), ("image_index", pa.int32()), ("width", pa.int32()),
                         ("height", pa.int32()), ("n_patches", pa.int32())]),
    "patches": pa.schema([("sample", pa.int64()), ("image_index", pa.int32()), ("ord", pa.int32()),
                          ("tile", pa.int32()), ("patch_row", pa.int32()), ("patch_col", pa.int32()),
                          ("x0", pa.float64()), ("y0", pa.float64()), ("x1", pa.float64()), ("y1", pa.float64())]),
}


def chunk_file(state_dir: Path, table: str, chunk: int) -> Path:
    return state_dir / f"{table}-{chunk:06d}.parquet"


def features_table(state: IndexState) -> pa.Table:
    s = {k: v.cpu() for k, v in state.stats.items()}
    n = s["n_fires"].numpy()
    img, txt = s["n_image_fires"].numpy(), s["n_text_fires"].numpy()
    n_tokens = max(state.counts["n_tokens"], 1)
    # float32 rounding: activations are float32, and it hides the summation order of the sums.
    mean = np.where(n > 0, (s["sum_act"].numpy() / np.maximum(n, 1)).astype(np.float32), 0).astype(np.float64)
    share = np.where(img + txt > 0, img / np.maximum(img + txt, 1), np.nan)
    return pa.table({
        "feature": np.arange(len(n), dtype=np.int32), "n_fires": n, "n_image_fires": img, "n_text_fires": txt,
        "frequency": n / n_tokens, "mean_act": mean, "max_act": s["max_act"].numpy().astype(np.float64),
        "image_share": pa.array(share, from_pandas=True), "n_special_fires": s["n_special_fires"].numpy(),
    })


def examples_table(state: IndexState) -> pa.Table:
    top = state.images
    f, r = torch.nonzero(top.filled(), as_tuple=True)
    sample, image_index = split_image_key(top.key_FN[f, r])
    return pa.table({
        "feature": f.int().numpy(), "rank": r.int().numpy(), "sample": sample.int().numpy(),
        "image_index": image_index.int().numpy(), "max_act": top.payload["max"][f, r].double().numpy(),
        "mean_act": top.payload["mean"][f, r].double().numpy(), "score": top.score_FN[f, r].double().numpy(),
    })


def patch_maps_table(state: IndexState) -> pa.Table:
    pool = state.pool_tensors()
    feat, key = pool["feature"].long(), pool["key"]
    rank = torch.zeros(len(feat), dtype=torch.int64)
    key_FN = state.images.key_FN.cpu()
    for s in range(0, len(feat), 1 << 20):  # blocks bound the [entries, N] comparison
        rank[s:s + (1 << 20)] = (key_FN[feat[s:s + (1 << 20)]] == key[s:s + (1 << 20), None]).int().argmax(1)
    f, r, o, a = feat.numpy(), rank.numpy(), pool["ord"].numpy(), pool["act"].numpy()
    order = np.lexsort((o, r, f))
    f, r, o, a = f[order], r[order], o[order], a[order]
    starts = np.flatnonzero(np.r_[True, (f[1:] != f[:-1]) | (r[1:] != r[:-1])]) if len(f) else np.zeros(0, np.int64)
    offsets = pa.array(np.r_[starts, len(f)].astype(np.int32))
    return pa.table({
        "feature": f[starts].astype(np.int32), "rank": r[starts].astype(np.int32),
        "ords": pa.ListArray.from_arrays(offsets, pa.array(o.astype(np.int32))),
        "acts": pa.ListArray.from_arrays(offsets, pa.array(a.astype(np.float32))),
    })


def render_contexts(windows_CW: np.ndarray, before: int, batch_decode: Callable[[list[list[int]]], list[str]]):
    """(token, context) strings for each window of token ids; the centre token is marked <<tok>>,
    an image inside the window is shown as <image>."""
    pieces: list[list[int]] = []  # every run of plain token ids, decoded in one batch call
    layout: list[tuple[list, int, list]] = []  # per window: left items, centre piece, right items

    def items(ids) -> list:
        out, run = [], []
        for i in ids:
            if i == NO_TOKEN:
                continue
            if i == IMAGE_MARK:
                if run:
                    out.append(len(pieces))
                    pieces.append(run)
                    run = []
                out.append("<image>")
            else:
                run.append(int(i))
        if run:
            out.append(len(pieces))
            pieces.append(run)
        return out

    for w in windows_CW.tolist():
        left, right = items(w[:before]), items(w[before + 1:])
        layout.append((left, len(pieces), right))
        pieces.append([int(w[before])])
    # A (sample, position) is in the top-N of many features, so the same runs recur: decode each once.
    unique: dict[tuple[int, ...], int] = {}
    which = [unique.setdefault(tuple(piece), len(unique)) for piece in pieces]
    decoded = batch_decode([list(u) for u in unique]) if unique else []
    text = [decoded[u] for u in which]
    show = lambda its: " ".join(x if isinstance(x, str) else text[x] for x in its).strip()  # noqa: E731
    tokens = [text[c] for _, c, _ in layout]
    contexts = [" ".join(p for p in (show(le), f"<<{text[c]}>>", show(ri)) if p) for le, c, ri in layout]
    return tokens, contexts


def text_contexts_table(state: IndexState, batch_decode) -> pa.Table:
    top = state.texts
    if state.n_text == 0:
        f = r = torch.zeros(0, dtype=torch.int64)
    else:
        f, r = torch.nonzero(top.filled(), as_tuple=True)
    sample, position = split_text_key(top.key_FN[f, r])
    tokens, contexts = render_contexts(top.payload["window"][f, r].cpu().numpy(), state.before, batch_decode)
    return pa.table({
        "feature": f.int().numpy(), "rank": r.int().numpy(), "sample": sample.int().numpy(),
        "position": position.int().numpy(), "token": pa.array(tokens, pa.string()),
        "activation": top.score_FN[f, r].double().numpy(), "context": pa.array(contexts, pa.string()),
    })


def write_index(path: Path, meta: dict, state: IndexState, state_dir: Path, batch_decode) -> None:
    """Write the whole index into a new DuckDB file at `path` (the caller renames it into place)."""
    state.to("cpu")
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        create_tables(con, *BUILD_TABLES)
        meta = {**meta, VERSION_KEY: SCHEMA_VERSION}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v, sort_keys=True)) for k, v in
                                                            sorted(meta.items())])
        for table, arrow, order in (("features", features_table(state), "feature"),
                                    ("examples", examples_table(state), "feature, rank"),
                                    ("patch_maps", patch_maps_table(state), "feature, rank"),
                                    ("text_contexts", text_contexts_table(state, batch_decode), "feature, rank")):
            con.register("src", arrow)
            con.execute(f"INSERT INTO {table} SELECT * FROM src ORDER BY {order}")
            con.unregister("src")
        files = {t: sorted(str(p) for p in state_dir.glob(f"{t}-*.parquet")) for t in CHUNK_TABLES}
        wanted_images = "(SELECT DISTINCT sample, image_index FROM examples)"
        if files["images"]:
            con.execute(f"""INSERT INTO images SELECT i.sample, i.image_index, i.width, i.height, i.n_patches
                FROM read_parquet(?) i JOIN {wanted_images} e USING (sample, image_index)
                ORDER BY i.sample, i.image_index""", [files["images"]])
        if files["patches"]:
            con.execute(f"""INSERT INTO image_patches SELECT p.sample, p.image_index, p.ord, p.tile, p.patch_row,
                p.patch_col, nullif(p.x0, 'NaN'), nullif(p.y0, 'NaN'), nullif(p.x1, 'NaN'), nullif(p.y1, 'NaN')
                FROM read_parquet(?) p JOIN {wanted_images} e USING (sample, image_index)
                ORDER BY p.sample, p.image_index, p.ord""", [files["patches"]])
        if files["samples"]:
            con.execute("""INSERT INTO samples SELECT s.sample, s.sample_id, s.n_images, s.text
                FROM read_parquet(?) s WHERE s.sample IN (SELECT sample FROM examples UNION
                SELECT sample FROM text_contexts) ORDER BY s.sample""", [files["samples"]])
        con.execute("CHECKPOINT")
    finally:
        con.close()
