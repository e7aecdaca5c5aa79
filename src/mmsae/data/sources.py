"""Data sources: indexable, deterministic, each record with a stable id.

A source is a sequence: `len(src)` records and `src.record(i)` -> Record, or raises Reject. Random
access by index is what makes harvesting resumable and shardable across ranks without reading
records twice: shard k of a store is always records [k*R, (k+1)*R).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .images import DEFAULT_MAX_PIXELS, Reject, load_image

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Record:
    id: str
    images: list[Image.Image]
    text: str  # with "<image>" placeholders, or none (images then go first)
    meta: dict[str, Any] = field(default_factory=dict)


def _fill(template: str, text: str, sample_id: str, **fields: str) -> str:
    try:
        return template.format(text=text, **fields)
    except (KeyError, IndexError, ValueError) as e:
        raise Reject(sample_id, f"prompt template {template!r} cannot be filled: {e}") from None


class Source:
    name = "source"
    default_prompt = "<image>"  # the paper caches with the image alone

    def __init__(self, prompt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.prompt = self.default_prompt if prompt is None else prompt
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        raise NotImplementedError

    def record(self, i: int) -> Record:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.name, "prompt": self.prompt, "n": len(self)}


class ImageFolderSource(Source):
    """Every image file under a folder (recursive, sorted); id = relative path."""

    name = "folder"

    def __init__(self, root: str | os.PathLike, prompt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(prompt, max_pixels)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        self.files = sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.suffix.lower() in IMAGE_EXTS and not p.is_dir()
        )

    def __len__(self) -> int:
        return len(self.files)

    def record(self, i: int) -> Record:
        rel = self.files[i]
        image = load_image(self.root / rel, rel, self.max_pixels)
        return Record(rel, [image], _fill(self.prompt, "", rel))

    def describe(self) -> dict:
        return {**super().describe(), "root": str(self.root)}


class JsonlSource(Source):
    """LLaVA conversation format: {"id", "image": path | [paths], "conversations": [{"from", "value"}]}.

    The text is the turns' values joined by newlines (they already hold "<image>"); a prompt template
    may wrap it as "{text}". Image paths are relative to image_root (default: the file's folder)."""

    name = "jsonl"
    default_prompt = "{text}"

    def __init__(self, path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                 prompt: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
        super().__init__(prompt, max_pixels)
        self.path = Path(path)
        self.image_root = Path(image_root) if image_root else self.path.parent
        self.offsets: list[int] = []
        with open(self.path, "rb") as fh:  # index line offsets once; records are read on demand
            pos = 0
            for line in fh:
                if line.strip():
                    self.offsets.append(pos)
                pos += len(line)

    def __len__(self) -> int:
        return len(self.offsets)

    def record(self, i: int) -> Record:
        with open(self.path, "rb") as fh:
            fh.seek(self.offsets[i])
            line = fh.readline()
        fallback = f"{self.path.name}:{i}"
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Reject(fallback, f"malformed JSON line: {e}") from None
        if not isinstance(obj, dict):
            raise Reject(fallback, "JSON line is not an object")
        sid = str(obj.get("id", fallback))
        convs = obj.get("conversations", [])
        if not isinstance(convs, list) or not all(isinstance(c, dict) and "value" in c for c in convs):
            raise Reject(sid, "'conversations' must be a list of {from, value} objects")
        paths = obj.get("image", [])
        paths = [paths] if isinstance(paths, str) else paths
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise Reject(sid, "'image' must be a path or a list of paths")
        images = [load_image(self.image_root / p, sid, self.max_pixels) for p in paths]
        text = "\n".join(str(c["value"]) for c in convs)
        return Record(sid, images, _fill(self.prompt, text, sid), meta={"conversations": convs})

    def describe(self) -> dict:
        return {**super().describe(), "path": str(self.path), "image_root": str(self.image_root)}


class WorldSource(Source):
    """The synthetic world: scene i of World(WorldConfig(seed, image_size)), id 'world-<seed>-<i>'.

    The prompt defaults to "<image>" (the paper caches with the image alone); "{caption}" in it is
    replaced by the scene's caption from mmsae.world.text."""

    name = "world"

    def __init__(self, n: int, seed: int = 0, image_size: int | None = None, prompt: str | None = None):
        super().__init__(prompt)
        from mmsae.world import World, WorldConfig

        kwargs = {"seed": seed} if image_size is None else {"seed": seed, "image_size": image_size}
        self.world = World(WorldConfig(**kwargs))
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def record(self, i: int) -> Record:
        scene = self.world[i]
        sid = f"world-{self.seed}-{i}"
        fields = {}
        if "{caption}" in self.prompt:  # e.g. "<image> {caption}": the scene's own caption
            from mmsae.world.text import caption

            fields["caption"] = caption(scene)
        return Record(sid, [scene.pil], _fill(self.prompt, "", sid, **fields), meta={"index": scene.index})

    def describe(self) -> dict:
        return {**super().describe(), "seed": self.seed, "image_size": self.world.config.image_size}
