"""IoU of a grounded explanation with a feature's activation region, and its random baselines."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..world import World, WorldConfig
from ..world.vocab import CLASS_OF


def binarise(map_GG: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """The activation region: patches whose activation exceeds `threshold` x the map's maximum
    (0 keeps every firing patch, as the paper's masking does)."""
    peak = float(map_GG.max())
    if peak <= 0:
        return np.zeros(map_GG.shape, dtype=bool)
    return map_GG > threshold * peak


def upsample(mask_GG: np.ndarray, image_size: int) -> np.ndarray:
    """Patch-grid mask -> pixel mask (the world's images map patches to pixels exactly)."""
    p = image_size // mask_GG.shape[0]
    return np.repeat(np.repeat(mask_GG, p, axis=0), p, axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


_WORDS = sorted(CLASS_OF, key=len, reverse=True)


def entity_concepts(phrase: str) -> list[str]:
    """Rule-based entity extraction: the world's concept names that the phrase mentions."""
    text = f" {phrase.lower().replace('colour', ' ').replace('color', ' ')} "
    found = []
    for name in _WORDS:
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            found.append(name)
            text = text.replace(name, " ")
    return found


@dataclass
class WorldSegmenter:
    """Grounding + segmentation on the embedded world: the exact masks of the concepts a phrase names.
    A phrase that names no concept segments nothing (IoU 0, counted as the paper counts grounding failures)."""

    config: WorldConfig = WorldConfig()

    def __post_init__(self) -> None:
        self._world = World(self.config)

    def segment(self, image_index: int, phrase: str) -> np.ndarray:
        scene = self._world[image_index]
        mask = np.zeros(scene.image.shape[:2], dtype=bool)
        for name in entity_concepts(phrase):
            mask |= scene.concept_mask(name)
        return mask


def iou_score(segment, phrase: str, image_indices: list[int], maps: list[np.ndarray], image_size: int,
              threshold: float = 0.0) -> float:
    """Mean IoU over a feature's top images between the explanation's segmentation and the region."""
    vals = [iou(segment(i, phrase), upsample(binarise(m, threshold), image_size)) for i, m in zip(image_indices, maps)]
    return float(np.mean(vals)) if vals else 0.0


def random_region_iou(segment, phrase: str, image_indices: list[int], maps: list[np.ndarray], image_size: int,
                      rng: np.random.Generator, trials: int = 20, threshold: float = 0.0) -> float:
    """Baseline: the same explanation against regions of the same size placed at random patches."""
    vals = []
    for _ in range(trials):
        rand_maps = []
        for m in maps:
            k = int(binarise(m, threshold).sum())
            flat = np.zeros(m.size, dtype=float)
            flat[rng.choice(m.size, size=k, replace=False)] = 1.0
            rand_maps.append(flat.reshape(m.shape))
        vals.append(iou_score(segment, phrase, image_indices, rand_maps, image_size, threshold))
    return float(np.mean(vals))
