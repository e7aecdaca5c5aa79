"""Contact sheets of world samples: each image, its caption, and one mask overlay per concept class."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..io import atomic_dir, write_config
from .scene import Scene
from .text import caption, questions
from .vocab import CONCEPT_CLASSES, PAPER_CLASSES

PALETTE = np.array([(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
                    (145, 30, 180), (70, 240, 240), (240, 50, 230)], dtype=np.float32)


def overlay(scene: Scene, cls: str) -> tuple[np.ndarray, list[str]]:
    """The image dimmed, with every present concept of one class painted in its own colour."""
    out = scene.image.astype(np.float32) * 0.35
    names = [n for n in CONCEPT_CLASSES[cls] if n in scene.concepts()]
    for j, name in enumerate(names):
        m = scene.concept_mask(name)
        out[m] = 0.4 * scene.image[m] + 0.6 * PALETTE[j % len(PALETTE)]
    return out.astype(np.uint8), names


def contact_sheet(scenes: list[Scene], scale: int = 3) -> Image.Image:
    """One row per scene: the image, then an overlay per paper concept class, with a caption strip."""
    s = scenes[0].config.image_size * scale
    cols = 1 + len(PAPER_CLASSES)
    label_h, cap_h = 14, 30
    sheet = Image.new("RGB", (cols * (s + 4) + 4, len(scenes) * (s + label_h + cap_h + 6) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, scene in enumerate(scenes):
        y = 4 + r * (s + label_h + cap_h + 6)
        panels = [(scene.image, f"#{scene.index}")] + [
            (img, f"{cls}: {', '.join(names)}") for cls in PAPER_CLASSES for img, names in [overlay(scene, cls)]
        ]
        for c, (img, label) in enumerate(panels):
            x = 4 + c * (s + 4)
            draw.text((x, y), label[: s // 6], fill=(0, 0, 0))
            sheet.paste(Image.fromarray(img).resize((s, s), Image.NEAREST), (x, y + label_h))
        draw.text((4, y + label_h + s + 2), "\n".join(textwrap.wrap(caption(scene), 150)[:2]), fill=(40, 40, 40))
    return sheet


def write_samples(scenes: list[Scene], out: Path, cfg=None) -> None:
    """sheet.png, one PNG per scene and samples.jsonl (and `cfg`, a dataclass, as config.json), all or nothing
    (the folder appears complete)."""
    with atomic_dir(out) as tmp:
        if cfg is not None:
            write_config(tmp, cfg)
        contact_sheet(scenes).save(tmp / "sheet.png")
        rng = np.random.default_rng(0)
        with open(tmp / "samples.jsonl", "w") as f:
            for s in scenes:
                s.pil.save(tmp / f"scene_{s.index:06d}.png")
                f.write(json.dumps({
                    "index": s.index, "image": f"scene_{s.index:06d}.png", "scene": s.background,
                    "caption": caption(s), "objects": [o.attributes() for o in s.objects],
                    "concepts": sorted(s.concepts()),
                    "qa": [{"question": q.question, "answer": q.answer, "type": q.type} for q in questions(s, rng)],
                }) + "\n")
