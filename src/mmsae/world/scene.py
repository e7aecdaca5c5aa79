"""Deterministic scenes from (seed, index): object specs, the rendered image and exact concept masks."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from PIL import Image

from . import render
from .vocab import (
    COLOURS,
    CONCEPT_CLASSES,
    KINDS,
    MATERIALS,
    PARTS,
    POSITIONS,
    SCENES,
    SIZES,
    TEXTURES,
    concept_class,
)

SIZE_RADIUS = {"small": 0.12, "medium": 0.16, "large": 0.205}  # object radius as a fraction of the image
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides the world's images; (config, index) -> one scene, always the same."""

    seed: int = 0
    image_size: int = 64
    patch_size: int = 8  # the grid on which patch labels and patch masks are given
    min_objects: int = 1
    max_objects: int = 3
    prior_kind: str = "star"  # the prior-bias slice: this kind nearly always has prior_colour
    prior_colour: str = "yellow"
    prior_strength: float = 0.95  # P(colour = prior_colour | kind = prior_kind); 1/8 means no bias
    forced: tuple[tuple[str, str], ...] = ()  # (class, value) pairs forced onto the first object / scene

    def __post_init__(self) -> None:
        problems = []
        if self.image_size < MIN_IMAGE_SIZE:
            problems.append(f"image_size {self.image_size} is below the minimum {MIN_IMAGE_SIZE}")
        if self.patch_size < 1 or self.image_size % self.patch_size:
            problems.append(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        elif (self.image_size // self.patch_size) < 4:
            problems.append(
                f"a {self.image_size}px image gives a {self.image_size // self.patch_size}x"
                f"{self.image_size // self.patch_size} patch grid; at least 4x4 is needed"
            )
        if not 1 <= self.min_objects <= self.max_objects <= 3:
            problems.append(
                f"objects per image must satisfy 1 <= min ({self.min_objects}) <= max ({self.max_objects}) <= 3"
            )
        if self.prior_kind not in KINDS:
            problems.append(f"prior_kind {self.prior_kind!r} is not one of {KINDS}")
        if self.prior_colour not in COLOURS:
            problems.append(f"prior_colour {self.prior_colour!r} is not one of {tuple(COLOURS)}")
        if not 0.0 <= self.prior_strength <= 1.0:
            problems.append(f"prior_strength {self.prior_strength} is not a probability")
        for cls, value in self.forced:
            if cls not in CONCEPT_CLASSES or value not in CONCEPT_CLASSES[cls]:
                problems.append(f"forced concept {cls}={value!r} is not in the vocabulary")
        if problems:
            raise ValueError("impossible world settings: " + "; ".join(problems))

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class ObjectSpec:
    kind: str
    colour: str
    texture: str
    material: str
    size: str
    cell: tuple[int, int]  # (row, col) in the 3x3 layout grid
    centre: tuple[float, float]  # (x, y) in pixels
    radius: float

    @property
    def position(self) -> str:
        return POSITIONS[self.cell[0]][self.cell[1]]

    @property
    def parts(self) -> tuple[str, str]:
        return PARTS[self.kind]

    def attributes(self) -> dict[str, str]:
        return {
            "object": self.kind,
            "colour": self.colour,
            "texture": self.texture,
            "material": self.material,
            "size": self.size,
            "position": self.position,
        }


@dataclass
class Scene:
    index: int
    config: WorldConfig
    background: str
    objects: list[ObjectSpec]
    image: np.ndarray  # HxWx3 uint8
    part_masks: list[dict[str, np.ndarray]] = field(repr=False)  # visible pixels of each part, per object

    @property
    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)

    def object_mask(self, i: int) -> np.ndarray:
        masks = list(self.part_masks[i].values())
        return masks[0] | masks[1]

    @cached_property
    def background_mask(self) -> np.ndarray:
        covered = np.zeros(self.image.shape[:2], dtype=bool)
        for i in range(len(self.objects)):
            covered |= self.object_mask(i)
        return ~covered

    def instance_masks(self, concept: str) -> list[np.ndarray]:
        """One exact pixel mask per instance of a concept in this image (empty list if absent)."""
        cls = concept_class(concept)
        if cls == "scene":
            return [self.background_mask] if concept == self.background else []
        if cls == "part":
            return [pm[concept] for pm in self.part_masks if concept in pm]
        return [self.object_mask(i) for i, o in enumerate(self.objects) if o.attributes()[cls] == concept]

    def concept_mask(self, concept: str) -> np.ndarray:
        """Union of all instance masks of a concept (all False when absent)."""
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        for m in self.instance_masks(concept):
            mask |= m
        return mask

    def concepts(self) -> set[str]:
        """Every concept with at least one visible pixel in this image."""
        return set(self._concepts)

    @cached_property
    def _concepts(self) -> frozenset[str]:
        names = {self.background}
        for i, o in enumerate(self.objects):
            names.update(o.attributes().values())
            names.update(p for p, m in self.part_masks[i].items() if m.any())
        return frozenset(names)

    def patch_coverage(self, mask: np.ndarray) -> np.ndarray:
        """Fraction of each patch (grid x grid) that a pixel mask covers."""
        g, p = self.config.grid, self.config.patch_size
        return mask.reshape(g, p, g, p).mean(axis=(1, 3))


class World:
    """The procedural image world: `World(cfg)[i]` is scene i, identical on every machine."""

    def __init__(self, config: WorldConfig | None = None):
        self.config = config or WorldConfig()

    def __getitem__(self, index: int) -> Scene:
        if index < 0:
            raise IndexError(f"scene index must be >= 0, got {index}")
        return self.sample(index)

    def sample(self, index: int) -> Scene:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, index])
        forced = dict(cfg.forced)
        scene_name = forced.get("scene") or SCENES[rng.integers(len(SCENES))]
        n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        cells = rng.permutation(9)[:n]
        objects = []
        s = cfg.image_size
        for j, cell in enumerate(cells):
            row, col = divmod(int(cell), 3)
            kind = KINDS[rng.integers(len(KINDS))]
            if j == 0 and ("object" in forced or "part" in forced):  # before the colour: the prior depends on it
                kind = forced["object"] if "object" in forced else _owner(forced["part"])
            colour = self._colour(kind, rng)
            attrs = {
                "object": kind,
                "colour": colour,
                "texture": TEXTURES[rng.integers(len(TEXTURES))],
                "material": MATERIALS[rng.integers(len(MATERIALS))],
                "size": SIZES[rng.integers(len(SIZES))],
            }
            if j == 0:
                attrs.update({c: v for c, v in forced.items() if c in attrs})
                if "position" in forced:
                    row, col = _cell_of(forced["position"])
            r = SIZE_RADIUS[attrs["size"]] * s
            jitter = rng.uniform(-0.06, 0.06, 2) * s
            # min/max on scalars: np.clip's value, without its dispatch overhead (issue 16)
            cx = float(min(max((col + 0.5) * s / 3 + jitter[0], r), s - r))
            cy = float(min(max((row + 0.5) * s / 3 + jitter[1], r), s - r))
            objects.append(
                ObjectSpec(
                    kind=attrs["object"], colour=attrs["colour"], texture=attrs["texture"],
                    material=attrs["material"], size=attrs["size"], cell=(row, col),
                    centre=(cx, cy), radius=r,
                )
            )
        if "position" in forced:  # keep layout cells distinct after forcing the first one
            taken = {objects[0].cell}
            objects = objects[:1] + [o for o in objects[1:] if o.cell not in taken]
        canvas = render.background(scene_name, s, rng)
        full = [render.part_masks(o.kind, o.centre[0], o.centre[1], o.radius, s) for o in objects]
        for o, parts in zip(objects, full):
            render.paint_object(canvas, parts, o.kind, o.colour, o.texture, o.material, *o.centre, o.radius)
        visible: list[dict[str, np.ndarray]] = []
        above = np.zeros((s, s), dtype=bool)  # the union of the objects after the current one
        for parts in reversed(full):  # later objects occlude earlier ones
            visible.insert(0, {p: m & ~above for p, m in parts.items()})
            for m in parts.values():
                above |= m
        return Scene(index, cfg, scene_name, objects, np.rint(canvas, out=canvas).astype(np.uint8), visible)

    def _colour(self, kind: str, rng: np.random.Generator) -> str:
        cfg = self.config
        if kind == cfg.prior_kind and rng.random() < cfg.prior_strength:
            return cfg.prior_colour
        if kind == cfg.prior_kind:  # the rest of the mass goes to the other colours
            others = [c for c in COLOURS if c != cfg.prior_colour]
            return others[rng.integers(len(others))]
        names = tuple(COLOURS)
        return names[rng.integers(len(names))]


def _owner(part: str) -> str:
    for kind, pair in PARTS.items():
        if part in pair:
            return kind
    raise ValueError(f"unknown part {part!r}")


def _cell_of(position: str) -> tuple[int, int]:
    for r, row in enumerate(POSITIONS):
        if position in row:
            return r, row.index(position)
    raise ValueError(f"unknown position {position!r}")
