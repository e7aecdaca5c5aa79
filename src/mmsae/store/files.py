"""Atomic file writes, shard file naming, model fingerprints and loose activation files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

SHARD_DIR = "shards"
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
HARVEST_CONFIG = "harvest.json"
FORMAT = "mmsae-store/1"


def shard_stem(k: int) -> str:
    return f"{SHARD_DIR}/shard-{k:06d}"


from mmsae.io import atomic_path  # noqa: E402  (one copy, in mmsae.io; re-exported for the store's callers)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def clean_temp_files(root: Path) -> None:
    """Remove temp files a killed run left behind (their data is redone on resume)."""
    for p in list(root.glob(".*.tmp-*")) + list((root / SHARD_DIR).glob(".*.tmp-*")):
        p.unlink(missing_ok=True)


def _safetensors_digest(path: Path, h) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        h.update(fh.read(n))  # names, dtypes, shapes, offsets
        h.update(fh.read(1 << 20))  # first MiB of weights
        fh.seek(max(8 + n, size - (1 << 20)))
        h.update(fh.read())  # last MiB of weights


def model_fingerprint(path: str | os.PathLike) -> str:
    """sha256 over config.json and each weight file's size, header and first/last MiB.

    Not a full content hash (that would read 16 GB for an 8B model at every harvest), but it
    changes with any retraining, re-seeding, dtype or shape change."""
    path = Path(path)
    h = hashlib.sha256()
    for name in ("config.json",):
        if (path / name).exists():
            h.update((path / name).read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f.name.encode())
        h.update(str(f.stat().st_size).encode())
        if f.suffix == ".safetensors":
            _safetensors_digest(f, h)
        else:
            with open(f, "rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()


def load_activation_file(path: Path) -> torch.Tensor:
    """An [N, D] tensor from a .safetensors (key 'acts' or the only tensor) or .pt file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        if "acts" in tensors:
            return tensors["acts"]
        if len(tensors) == 1:
            return next(iter(tensors.values()))
        raise ValueError(f"{path} holds {sorted(tensors)}; name the activations 'acts'")
    if path.suffix in (".pt", ".pth"):
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        obj = obj["acts"] if isinstance(obj, dict) else obj
        if not isinstance(obj, torch.Tensor) or obj.ndim != 2:
            raise ValueError(f"{path} does not hold an [N, D] tensor")
        return obj
    raise ValueError(f"{path}: expected a store folder, a .safetensors or a .pt file")
