"""`mmsae world sample` and `mmsae world mask`: look at the embedded world."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from .scene import World, WorldConfig


@dataclass
class SampleConfig:
    """Write a contact sheet (images, captions, a mask overlay per concept class) and the scenes' specs."""

    out: Path
    """output directory (written all or nothing)"""
    n: int = 16
    """number of scenes"""
    seed: int = 0
    """world seed"""
    start: int = 0
    """index of the first scene"""
    image_size: int = 64
    """image side in pixels"""
    patch_size: int = 8
    """patch grid the masks are given on"""

    def __post_init__(self):
        self.out = Path(self.out)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n!r}")
        if self.start < 0:
            raise ValueError(f"start must be >= 0, got {self.start!r}")


def run_sample(cfg: SampleConfig) -> dict:
    from .sheet import write_samples

    world = World(WorldConfig(seed=cfg.seed, image_size=cfg.image_size, patch_size=cfg.patch_size))
    write_samples([world[i] for i in range(cfg.start, cfg.start + cfg.n)], cfg.out, cfg)
    return {"out": str(cfg.out), "n": cfg.n, "sheet": str(cfg.out / "sheet.png"),
            "samples": str(cfg.out / "samples.jsonl")}


def format_sample(result: dict, cfg: SampleConfig) -> str:
    return f"wrote {result['n']} scenes to {result['sheet']} and {result['samples']}"


@dataclass
class MaskConfig:
    """Write the exact pixel mask of one concept in one scene."""

    index: int
    """scene index"""
    concept: str
    """concept name, e.g. red, star, roof, striped, metal, sand"""
    out: Path
    """PNG to write (white = concept pixels); its config goes beside it as <name>.config.json"""
    seed: int = 0
    """world seed"""

    def __post_init__(self):
        self.out = Path(self.out)
        if self.index < 0:
            raise ValueError(f"index must be >= 0, got {self.index!r}")


def run_mask(cfg: MaskConfig) -> dict:
    from PIL import Image

    from ..io import config_beside, write_atomic, write_config

    mask_HW = World(WorldConfig(seed=cfg.seed))[cfg.index].concept_mask(cfg.concept)
    buf = io.BytesIO()
    Image.fromarray(mask_HW.astype("uint8") * 255).save(buf, format="PNG")
    write_atomic(cfg.out, buf.getvalue())
    write_config(cfg.out.parent, cfg, config_beside(cfg.out))
    return {"concept": cfg.concept, "pixels": int(mask_HW.sum()), "out": str(cfg.out)}


def format_mask(result: dict, cfg: MaskConfig) -> str:
    return f"{result['concept']}: {result['pixels']} pixels -> {result['out']}"
