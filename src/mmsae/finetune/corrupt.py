"""A world instruction set (one question of a random class per scene, with its answer) of which a known
share is corrupted in the ways real instruction data goes wrong. The corruption labels go to a separate
file (labels.json) that no scorer reads; the records are LLaVA-format JSONL any `--data jsonl:` reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import atomic_dir
from ..world import World, WorldConfig
from ..world.text import QA, questions
from ..world.vocab import COUNTS, CONCEPT_CLASSES, KINDS

CORRUPTIONS = ("mismatch", "wrong_value", "noise", "blank", "duplicate", "empty", "truncated")
"""mismatch: the image of another scene; wrong_value: a wrong answer of the right type; noise / blank: the
image replaced by noise or a flat grey; duplicate: a near-copy (pixel jitter) of another record;
empty: no answer text; truncated: the answer cut to its first half."""

VALUES = {"colour": CONCEPT_CLASSES["colour"], "texture": CONCEPT_CLASSES["texture"],
          "material": CONCEPT_CLASSES["material"], "size": CONCEPT_CLASSES["size"],
          "position": CONCEPT_CLASSES["position"], "shape": KINDS, "scene": CONCEPT_CLASSES["scene"],
          "count": COUNTS, "presence": ("yes", "no"), "part": ("yes", "no"), "prior": ("yes", "no")}


def clean_items(n: int, world_seed: int, seed: int, start: int = 0) -> list[tuple[Image.Image, QA]]:
    """(image, one question) for scenes [start, start+n) of a world; the question class drawn at random."""
    world, rng = World(WorldConfig(seed=world_seed)), np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        scene = world[i]
        qs = questions(scene, rng)
        out.append((scene.pil, qs[int(rng.integers(len(qs)))]))
    return out


def _wrong(qa: QA, rng: np.random.Generator) -> str:
    options = [v for v in VALUES[qa.type] if v != qa.answer]
    return options[int(rng.integers(len(options)))]


def corrupt_items(items: list[tuple[Image.Image, QA]], fraction: float, seed: int,
                  kinds: tuple[str, ...] = CORRUPTIONS) -> tuple[list[tuple[Image.Image, str, str]], list[str | None]]:
    """(image, question, answer) per record and its corruption kind (None: clean); kinds in equal shares."""
    rng = np.random.default_rng(seed)
    n = len(items)
    chosen = rng.permutation(n)[: int(round(fraction * n))]
    kind_of: list[str | None] = [None] * n
    for j, i in enumerate(chosen):
        kind_of[int(i)] = kinds[j % len(kinds)]
    out = []
    for i, ((im, qa), kind) in enumerate(zip(items, kind_of)):
        q, a = qa.question, qa.answer
        if kind == "mismatch":
            im = items[(i + 1 + int(rng.integers(n - 1))) % n][0]
        elif kind == "wrong_value":
            a = _wrong(qa, rng)
        elif kind == "noise":
            im = Image.fromarray(rng.integers(0, 256, (*im.size[::-1], 3), dtype=np.uint8))
        elif kind == "blank":
            im = Image.new("RGB", im.size, (128, 128, 128))
        elif kind == "duplicate":
            src_im, src_qa = items[(i + 1 + int(rng.integers(n - 1))) % n]
            px = np.asarray(src_im).astype(np.int16) + rng.integers(-3, 4, np.asarray(src_im).shape)
            im, q, a = Image.fromarray(px.clip(0, 255).astype(np.uint8)), src_qa.question, src_qa.answer
        elif kind == "empty":
            a = ""
        elif kind == "truncated":
            a = a[: max(1, len(a) // 2)]
        out.append((im, q, a))
    return out, kind_of


def write_instruction_set(out: Path, n: int, *, fraction: float = 0.4, seed: int = 0, world_seed: int = 1,
                          kinds: tuple[str, ...] = CORRUPTIONS) -> dict:
    """out/instruct.jsonl + out/images/*.png (the data) and out/labels.json (kept apart: the truth)."""
    out = Path(out)
    items = clean_items(n, world_seed, seed)
    records, kind_of = corrupt_items(items, fraction, seed + 1, kinds)
    with atomic_dir(out) as d:
        (d / "images").mkdir()
        lines, labels = [], {}
        for i, ((im, q, a), kind) in enumerate(zip(records, kind_of)):
            rid = f"inst-{i}"
            im.save(d / "images" / f"{i}.png")
            lines.append(json.dumps({"id": rid, "image": f"images/{i}.png", "conversations": [
                {"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]}))
            labels[rid] = {"corruption": kind, "type": items[i][1].type}
        (d / "instruct.jsonl").write_text("\n".join(lines) + "\n")
        (d / "labels.json").write_text(json.dumps(labels, indent=1))
    return {"records": n, "corrupted": sum(k is not None for k in kind_of), "data": f"jsonl:{out / 'instruct.jsonl'}"}


def read_labels(out: Path) -> dict[str, dict]:
    return json.loads((Path(out) / "labels.json").read_text())
