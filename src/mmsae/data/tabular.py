"""Tabular sources: a Hugging Face `datasets` dataset saved to disk, or Parquet files."""

from __future__ import annotations

import io
import os
from bisect import bisect_right
from pathlib import Path
from typing import Any

from PIL import Image

from .images import DEFAULT_MAX_PIXELS, Reject, load_image
from .sources import Record, Source, _fill

IMAGE_COLUMNS = ("image", "images", "img", "picture")
TEXT_COLUMNS = ("text", "caption", "question", "prompt")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{what} column {wanted!r} not in {columns}")
        return wanted
    return next((c for c in candidates if c in columns), None)


class _Tabular(Source):
    default_prompt = "{text}"

    def __init__(self, image_column: str | None, text_column: str | None, id_column: str | None,
                 prompt: str | None, max_pixels: int, image_root: str | os.PathLike | None):
        super().__init__(prompt, max_pixels)
        cols = self.columns()
        self.image_column = _pick(cols, image_column, IMAGE_COLUMNS, "image")
        self.text_column = _pick(cols, text_column, TEXT_COLUMNS, "text")
        self.id_column = _pick(cols, id_column, ("id",), "id")
        self.image_root = Path(image_root) if image_root else None
        if self.image_column is None and self.text_column is None:
            raise ValueError(f"no image or text column among {cols}; name them explicitly")
        if self.image_column is None and "{text}" not in self.prompt:
            self.prompt = "{text}"

    def columns(self) -> list[str]:
        raise NotImplementedError

    def row(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def _image(self, value: Any, sid: str) -> Image.Image:
        if isinstance(value, dict):  # datasets' Image feature stored undecoded: {bytes, path}
            if value.get("bytes"):
                return load_image(bytes(value["bytes"]), sid, self.max_pixels)
            value = value.get("path")
        if isinstance(value, str):
            path = Path(value)
            if self.image_root is not None and not path.is_absolute():
                path = self.image_root / path
            return load_image(path, sid, self.max_pixels)
        if isinstance(value, (bytes, bytearray)):
            return load_image(io.BytesIO(value).getvalue(), sid, self.max_pixels)
        if isinstance(value, Image.Image):
            return load_image(value, sid, self.max_pixels)
        raise Reject(sid, f"image cell of type {type(value).__name__} is not an image")

    def record(self, i: int) -> Record:
        row = self.row(i)
        sid = str(row[self.id_column]) if self.id_column else str(i)
        images: list[Image.Image] = []
        if self.image_column is not None:
            cell = row[self.image_column]
            if cell is None:
                raise Reject(sid, "missing image (null cell)")
            cells = cell if isinstance(cell, list) else [cell]
            images = [self._image(c, sid) for c in cells]
        text = "" if self.text_column is None or row[self.text_column] is None else str(row[self.text_column])
        return Record(sid, images, _fill(self.prompt, text, sid))


class HFDiskSource(_Tabular):
    """`datasets.load_from_disk(path)`; a DatasetDict needs `split` (default: 'train' or the only one)."""

    name = "hf"

    def __init__(self, path: str | os.PathLike, split: str | None = None, image_column: str | None = None,
                 text_column: str | None = None, id_column: str | None = None, prompt: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, image_root: str | os.PathLike | None = None):
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            names = list(ds.keys())
            split = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
            if split not in ds:
                raise ValueError(f"dataset at {path} has splits {names}; choose one with split=")
            ds = ds[split]
        self.path, self.split, self.ds = Path(path), split, ds
        super().__init__(image_column, text_column, id_column, prompt, max_pixels, image_root)
        if self.image_column is not None:
            # Decode ourselves so a corrupt cell becomes a Reject rather than an exception in datasets.
            ds.reset_format()
            feat = ds.features.get(self.image_column)
            if isinstance(feat, datasets.Image):
                self.ds = ds.cast_column(self.image_column, datasets.Image(decode=False))

    def columns(self) -> list[str]:
        return list(self.ds.column_names)

    def __len__(self) -> int:
        return len(self.ds)

    def row(self, i: int) -> dict[str, Any]:
        return self.ds[int(i)]

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "split": self.split}


class ParquetSource(_Tabular):
    """One Parquet file or a folder of them (sorted), read one row group at a time."""

    name = "parquet"

    def __init__(self, path: str | os.PathLike, image_column: str | None = None, text_column: str | None = None,
                 id_column: str | None = None, prompt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 image_root: str | os.PathLike | None = None):
        import pyarrow.parquet as pq

        path = Path(path)
        self.path = path
        self.files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not self.files:
            raise FileNotFoundError(f"no Parquet files under {path}")
        self._pf = [pq.ParquetFile(f) for f in self.files]
        self._starts: list[int] = []  # global first row of every (file, row group)
        self._groups: list[tuple[int, int]] = []
        n = 0
        for fi, pf in enumerate(self._pf):
            for gi in range(pf.metadata.num_row_groups):
                self._starts.append(n)
                self._groups.append((fi, gi))
                n += pf.metadata.row_group(gi).num_rows
        self._n = n
        self._cache: tuple[int, list[dict]] | None = None
        if image_root is None:
            image_root = path if path.is_dir() else path.parent
        super().__init__(image_column, text_column, id_column, prompt, max_pixels, image_root)

    def columns(self) -> list[str]:
        return list(self._pf[0].schema_arrow.names)

    def __len__(self) -> int:
        return self._n

    def row(self, i: int) -> dict[str, Any]:
        g = bisect_right(self._starts, i) - 1
        if self._cache is None or self._cache[0] != g:
            fi, gi = self._groups[g]
            self._cache = (g, self._pf[fi].read_row_group(gi).to_pylist())
        return self._cache[1][i - self._starts[g]]

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "files": len(self.files)}
