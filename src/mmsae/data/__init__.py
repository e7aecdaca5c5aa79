"""Data sources yielding records with stable ids; bad inputs become Rejects with a reason.

`open_source(spec)` understands:
  world:n=1000,seed=0[,image_size=64]   the synthetic world
  folder:PATH  | a directory of images
  jsonl:PATH   | PATH.jsonl             LLaVA conversation format
  hf:PATH      | a `save_to_disk` dir   Hugging Face datasets (options: split, image_column, ...)
  parquet:PATH | PATH.parquet | a dir of .parquet files
Options after '?' for path specs: `jsonl:data.jsonl?image_root=imgs`, `hf:ds?split=test`.

May import (the layers of pyproject.toml's importlinter contract): world, viz, io, util, defaults.
"""

from __future__ import annotations

from pathlib import Path

from .images import DEFAULT_MAX_PIXELS, Reject, load_image
from .sources import ImageFolderSource, JsonlSource, Record, Source, WorldSource
from .tabular import HFDiskSource, ParquetSource

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "HFDiskSource",
    "ImageFolderSource",
    "JsonlSource",
    "ParquetSource",
    "Record",
    "Reject",
    "Source",
    "WorldSource",
    "load_image",
    "open_source",
]


def _options(text: str) -> dict[str, str]:
    opts = {}
    for part in filter(None, text.split(",")):
        if "=" not in part:
            raise ValueError(f"data option {part!r} is not key=value")
        k, v = part.split("=", 1)
        opts[k.strip()] = v.strip()
    return opts


def _is_hf_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
        path / "state.json"
    ).exists()


def open_source(spec: str, prompt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    """A source from a spec string (see module docstring)."""
    kind, sep, rest = spec.partition(":")
    if kind == "world":
        opts = _options(rest)
        unknown = set(opts) - {"n", "seed", "image_size"}
        if unknown or "n" not in opts:
            raise ValueError(f"world spec needs n= and allows seed=, image_size=; got {spec!r}")
        size = int(opts["image_size"]) if "image_size" in opts else None
        return WorldSource(int(opts["n"]), int(opts.get("seed", 0)), size, prompt)
    if not sep or kind not in ("folder", "jsonl", "hf", "parquet") or len(kind) == 1:
        kind, rest = "", spec  # a bare path (also Windows drive letters)
    path_text, _, opt_text = rest.partition("?")
    opts = _options(opt_text.replace("&", ","))
    path = Path(path_text)
    if not path.exists():
        raise FileNotFoundError(f"data {path} does not exist")
    if not kind:
        if path.is_dir():
            kind = "hf" if _is_hf_dir(path) else "parquet" if any(path.glob("*.parquet")) else "folder"
        elif path.suffix == ".jsonl":
            kind = "jsonl"
        elif path.suffix == ".parquet":
            kind = "parquet"
        else:
            raise ValueError(f"cannot tell what kind of data {path} is; prefix folder:/jsonl:/hf:/parquet:")
    if kind == "folder":
        return ImageFolderSource(path, prompt, max_pixels, **opts)
    if kind == "jsonl":
        return JsonlSource(path, prompt=prompt, max_pixels=max_pixels, **opts)
    if kind == "hf":
        return HFDiskSource(path, prompt=prompt, max_pixels=max_pixels, **opts)
    return ParquetSource(path, prompt=prompt, max_pixels=max_pixels, **opts)
