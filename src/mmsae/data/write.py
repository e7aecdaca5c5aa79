"""Writing a data source back with extra columns (scores) and optionally only some of its rows, in the
formats `open_source` reads: JSONL, Parquet, an image folder (+ metadata.jsonl), HF datasets on disk.

Every original field of every written row is kept as it was (image paths too: `spec` gives the
`open_source` spec that reads the written data, with the original image root where paths are relative).
Row i of the output's source is record i of the input, so columns are given per record index.

    out = write_dataset(source, "scored", {"saev_l0": values}, rows=None, fmt=None)
    out.spec  # e.g. "jsonl:scored/data.jsonl?image_root=/data/imgs"
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("jsonl", "parquet", "hf", "folder")
METADATA_FILE = "metadata.jsonl"  # the HF imagefolder convention: file_name + fields per image


@dataclass
class Written:
    format: str
    path: Path  # the data file or folder
    spec: str  # an open_source spec that reads it back
    n_rows: int


def source_format(source) -> str:
    """The format a source's data is written back in by default (the world's scenes become a folder)."""
    name = getattr(source, "name", "")
    if name == "world":
        return "folder"
    if name not in FORMATS:
        raise ValueError(f"cannot write a {name or type(source).__name__!r} source back; formats: {FORMATS}")
    return name


def _rows(source) -> list[dict | bytes]:
    """The original rows as dicts (a JSONL line that is not an object stays as its bytes)."""
    if source.name == "jsonl":
        out = []
        with open(source.path, "rb") as fh:
            for off in source.offsets:
                fh.seek(off)
                line = fh.readline()
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    obj = None
                out.append(obj if isinstance(obj, dict) else line.rstrip(b"\r\n"))
        return out
    if source.name == "parquet":
        return [source.row(i) for i in range(len(source))]
    if source.name == "hf":
        return list(_hf_dataset(source).to_list())
    raise ValueError(f"a {source.name} source has no rows of fields")


def _hf_dataset(source):
    import datasets

    ds = datasets.load_from_disk(str(source.path))
    return ds[source.split] if isinstance(ds, datasets.DatasetDict) else ds


def _check_columns(columns: dict[str, list], n: int) -> None:
    for name, values in columns.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} values for {n} records")


def write_dataset(source, out: str | Path, columns: dict[str, list[Any]], rows: list[int] | None = None,
                  fmt: str | None = None) -> Written:
    """Write `source` with `columns` (one value per record; None where a record has none) into the
    directory `out` (created; its data file replaced atomically), keeping the records `rows` (all when
    None) in the order given."""
    from mmsae.io import atomic_dir, write_atomic

    n = len(source)
    _check_columns(columns, n)
    keep = list(range(n)) if rows is None else [int(r) for r in rows]
    fmt = fmt or source_format(source)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "folder":
        return _write_folder(source, out, columns, keep)
    if source.name in ("folder", "world"):
        raise ValueError(f"a {source.name} source can be written as a folder only, not as {fmt}")
    image_root = getattr(source, "image_root", None)
    root_opt = f"?image_root={Path(image_root).resolve()}" if image_root is not None else ""
    if fmt == "hf":
        import datasets

        if source.name == "hf":
            ds = _hf_dataset(source)
        else:
            base = _rows(source)
            _all_objects(base, source)
            ds = datasets.Dataset.from_list(base)
        for name, values in columns.items():
            if name in ds.column_names:
                ds = ds.remove_columns(name)
            ds = ds.add_column(name, values)
        ds = ds.select(keep)
        with atomic_dir(out / "data") as tmp:
            ds.save_to_disk(str(tmp))
        return Written("hf", out / "data", f"hf:{out / 'data'}{root_opt}", len(keep))
    base = _rows(source)
    if fmt == "jsonl":
        lines = []
        for i in keep:
            row = base[i]
            if isinstance(row, bytes):  # not an object: kept as it was (its record is in the rejects)
                lines.append(row)
                continue
            row = {**row, **{name: values[i] for name, values in columns.items()}}
            try:
                lines.append(json.dumps(row, ensure_ascii=False).encode())
            except TypeError as e:
                raise ValueError(f"record {i}: a field cannot be written as JSON ({e}); use --format parquet") from None
        path = out / "data.jsonl"
        write_atomic(path, b"".join(line + b"\n" for line in lines))
        return Written("jsonl", path, f"jsonl:{path}{root_opt}", len(keep))
    import pyarrow as pa
    import pyarrow.parquet as pq

    _all_objects(base, source)
    if source.name == "parquet":
        table = pa.concat_tables([pq.read_table(f) for f in source.files]).combine_chunks()
        for name in columns:
            if name in table.column_names:
                table = table.drop_columns([name])
        for name, values in columns.items():
            table = table.append_column(name, pa.array(values))
        table = table.take(pa.array(keep, pa.int64()))
    else:
        table = pa.Table.from_pylist([{**base[i], **{k: v[i] for k, v in columns.items()}} for i in keep])
    path = out / "data.parquet"
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    write_atomic(path, buf.getvalue().to_pybytes())
    return Written("parquet", path, f"parquet:{path}{root_opt}", len(keep))


def _all_objects(base: list, source) -> None:
    bad = [i for i, r in enumerate(base) if not isinstance(r, dict)]
    if bad:
        raise ValueError(f"records {bad[:5]} of {source.name} data are not objects; only JSONL output keeps them")


def _write_folder(source, out: Path, columns: dict[str, list], keep: list[int]) -> Written:
    """Images under out/images (same relative paths; the world's scenes as PNG) + metadata.jsonl."""
    from mmsae.io import atomic_dir

    from .images import Reject

    if source.name not in ("folder", "world"):
        raise ValueError(f"a {source.name} source cannot be written as an image folder; use jsonl/parquet/hf")
    old_meta: dict[str, dict] = {}
    if source.name == "folder" and (source.root / METADATA_FILE).exists():
        for line in (source.root / METADATA_FILE).read_text().splitlines():
            if line.strip():
                obj = json.loads(line)
                old_meta[str(obj.get("file_name"))] = obj
    lines = []
    with atomic_dir(out / "images") as tmp:
        for i in keep:
            extra = {name: values[i] for name, values in columns.items()}
            if source.name == "folder":
                rel = source.files[i]
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.root / rel, tmp / rel)  # the original bytes, even of a broken file
                lines.append({**old_meta.get(rel, {}), "file_name": rel, **extra})
            else:
                try:
                    rec = source.record(i)
                except Reject as r:
                    raise ValueError(f"record {i}: {r.reason}") from None
                rel = f"{rec.id}.png"
                rec.images[0].save(tmp / rel)
                lines.append({"file_name": rel, "id": rec.id, "text": rec.text, **rec.meta, **extra})
        (tmp / METADATA_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return Written("folder", out / "images", f"folder:{out / 'images'}", len(keep))


def read_metadata(folder: str | Path) -> dict[str, dict]:
    """file_name -> fields of an image folder's metadata.jsonl (empty when it has none)."""
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return {}
    return {str(o["file_name"]): o for o in map(json.loads, filter(str.strip, path.read_text().splitlines()))}


def read_column(source, name: str) -> list[Any]:
    """The values of field `name` per record (None where a row lacks it): rows' fields, or an image
    folder's metadata.jsonl."""
    if source.name == "folder":
        meta = read_metadata(source.root)
        return [meta.get(rel, {}).get(name) for rel in source.files]
    if source.name == "world":
        raise ValueError("world data has no stored fields")
    return [r.get(name) if isinstance(r, dict) else None for r in _rows(source)]
