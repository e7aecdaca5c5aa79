"""Atomic writes: a result appears whole (temp path + rename) or not at all."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to `path`; on success fsync it and os.replace it into place, so a
    reader (or a resumed run after kill -9) sees either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name; on success it replaces `final`, on error it vanishes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file through a temporary sibling and os.replace, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    """JSON with two-space indent and sorted keys (Paths and other odd values as strings), atomically."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


CONFIG_FILE = "config.json"


def write_config(out_dir: Path, cfg, name: str = CONFIG_FILE) -> Path:
    """The resolved config of a run (a dataclass), as `out_dir/config.json` (or `out_dir/name`, for a run that
    writes into a folder another run owns, such as explain into an index); returns its path."""
    from dataclasses import asdict, is_dataclass

    data = asdict(cfg) if is_dataclass(cfg) else dict(cfg)
    path = Path(out_dir) / name
    write_json(path, {"config": type(cfg).__name__, **data})
    return path


def config_beside(file: Path) -> str:
    """The config file name for a run whose output is one file: `out.png` -> `out.config.json`."""
    return Path(file).name.rsplit(".", 1)[0] + ".config.json"


class JsonlAppender:
    """An append-only JSONL file that a resumed job truncates to the size its last saved state recorded
    (`sync()` returns that size), so lines written after the last save never appear twice."""

    def __init__(self, path: Path, keep_bytes: int):
        self.path = Path(path)
        with open(self.path, "ab") as fh:
            fh.truncate(keep_bytes)
        self.fh = open(self.path, "ab")  # noqa: SIM115 (closed by close())

    def write(self, obj: dict) -> None:
        self.fh.write((json.dumps(obj) + "\n").encode())

    def sync(self) -> int:
        """Flush and fsync; the byte size to save with the job's state."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        return self.fh.tell()

    def close(self) -> None:
        self.fh.close()
