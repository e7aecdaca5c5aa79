"""IoU of a grounded explanation with a feature's activation region, and its three random baselines.

Regions live in the ORIGINAL image's pixels: every image token carries its pixel box (x0, y0, x1, y1) in
the index's `image_patches`, so any model family, and every tile of an AnyRes image, maps back the same
way. A pixel belongs to a box when its centre lies inside it (adjacent boxes tile without overlap).
"""

from __future__ import annotations

import re

import numpy as np

from ..world.vocab import CLASS_OF
from .stats import Baseline


def binarise(acts: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """The activation region: patches whose activation exceeds `threshold` x the peak (0 keeps every
    firing patch, as the paper's masking does)."""
    acts = np.nan_to_num(np.asarray(acts, dtype=np.float64), nan=0.0)
    peak = float(acts.max()) if acts.size else 0.0
    if peak <= 0:
        return np.zeros(acts.shape, dtype=bool)
    return acts > threshold * peak


def _span(lo: float, hi: float, limit: int) -> tuple[int, int]:
    a, b = int(np.floor(lo + 0.5)), int(np.floor(hi + 0.5))
    if b <= a:  # a box narrower than a pixel still covers the pixel holding its centre
        a = int(np.floor((lo + hi) / 2))
        b = a + 1
    return max(a, 0), min(b, limit)


def paint(boxes_N4: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool H x W (size = (width, height)): the pixels covered by any of the boxes; NaN boxes (tokens
    that cover no original pixel) paint nothing."""
    width, height = size
    mask_HW = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes_N4, dtype=np.float64).reshape(-1, 4):
        if not np.all(np.isfinite((x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
            continue
        c0, c1 = _span(x0, x1, width)
        r0, r1 = _span(y0, y1, height)
        mask_HW[r0:r1, c0:c1] = True
    return mask_HW


def region_mask(boxes_N4: np.ndarray, acts_N: np.ndarray, size: tuple[int, int], threshold: float = 0.0) -> np.ndarray:
    """The binarised activation region of one image as a pixel mask."""
    boxes_N4 = np.asarray(boxes_N4, dtype=np.float64).reshape(-1, 4)
    if len(boxes_N4) != len(acts_N):
        raise ValueError(f"{len(boxes_N4)} patch boxes but {len(acts_N)} activations")
    return paint(boxes_N4[binarise(acts_N, threshold)], size)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one shape; 0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def mean_iou(segmentations: list[np.ndarray], regions: list[np.ndarray]) -> float:
    """The IoU score of one feature: mean over its top images (an empty segmentation counts as 0)."""
    if len(segmentations) != len(regions):
        raise ValueError(f"{len(segmentations)} segmentations but {len(regions)} regions")
    return float(np.mean([iou(s, r) for s, r in zip(segmentations, regions)])) if regions else 0.0


def random_region_iou(segmentations: list[np.ndarray], boxes: list[np.ndarray], sizes: list[int],
                      rng: np.random.Generator, trials: int = 100) -> Baseline:
    """Baseline: the same segmentations against regions of the same size (the same number of patches,
    `sizes[i]` for image i) placed on patches of the image drawn uniformly without replacement."""
    if not (len(segmentations) == len(boxes) == len(sizes)):
        raise ValueError("one segmentation, one box array and one region size per image are needed")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    valid = [np.flatnonzero(np.isfinite(np.asarray(b, np.float64).reshape(-1, 4)).all(1)) for b in boxes]
    values = []
    for _ in range(trials):
        per_image = []
        for seg, box_N4, ok, k in zip(segmentations, boxes, valid, sizes):
            pick = rng.choice(ok, size=min(int(k), len(ok)), replace=False)
            per_image.append(iou(seg, paint(np.asarray(box_N4)[pick], (seg.shape[1], seg.shape[0]))))
        values.append(float(np.mean(per_image)) if per_image else 0.0)
    return Baseline.of(values)


def random_explanation_iou(segment, images: list, sample_ids: list[str], regions: list[np.ndarray], pool,
                           phrase, rng: np.random.Generator, trials: int = 100) -> Baseline:
    """Baseline (the paper's): other features' explanations grounded on this feature's top images and
    compared with its activation regions. `segment(image, phrase, sample_id)` is the segmenter, `phrase`
    turns an explanation into the entity phrase to ground, `pool` holds the other explanations."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if len(pool) == 0:
        raise ValueError("no other explanation to draw random explanations from")
    cache: dict[int, float] = {}  # a drawn explanation's IoU is the same every time it is drawn
    values = []
    for _ in range(trials):
        j = int(rng.integers(len(pool)))
        if j not in cache:
            ph = phrase(pool[j])
            cache[j] = mean_iou([segment(im, ph, sid) for im, sid in zip(images, sample_ids)], regions)
        values.append(cache[j])
    return Baseline.of(values)


def random_image_iou(segment, region, n_pool: int, n_images: int, rng: np.random.Generator,
                     trials: int = 100) -> Baseline:
    """Baseline (the paper's code, its RandomSegmentScorer): the explanation and the feature's activation
    region on `n_images` random images of the data instead of its top images. `segment(i)` is the
    explanation's segmentation of pool image i, `region(i)` the feature's binarised activation there; an
    image where neither is found counts 0, as a grounding failure does."""
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if n_pool < 1:
        raise ValueError("no random images to draw from")
    cache: dict[int, float] = {}
    values = []
    for _ in range(trials):
        per_image = []
        for i in rng.choice(n_pool, size=min(n_images, n_pool), replace=False).tolist():
            if i not in cache:
                cache[i] = iou(segment(i), region(i))
            per_image.append(cache[i])
        values.append(float(np.mean(per_image)))
    return Baseline.of(values)


# ---- the world's vocabulary: entities named by an explanation, and its concept class ----

_WORDS = sorted(CLASS_OF, key=len, reverse=True)
_SPLIT = re.compile(r"\s*(?:,|;|/|\band\b|\bor\b|&|\+)\s*")


def _mentions(text: str) -> list[tuple[int, str]]:
    text = f" {text.lower().replace('colour', ' ').replace('color', ' ')} "
    found = []
    for name in _WORDS:  # longest names first, so "top-left" is not also read as "top" and "left"
        m = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if m:
            found.append((m.start(), name))
            text = text[: m.start()] + " " * len(name) + text[m.end():]
    return sorted(found)


def entity_concepts(phrase: str) -> list[str]:
    """Rule-based entity extraction: the world's concept names that the phrase mentions, in order."""
    return [name for _, name in _mentions(phrase)]


def concept_groups(phrase: str) -> list[list[str]]:
    """Entities grouped as a grounding model reads them: 'red star and grass' -> [['red', 'star'],
    ['grass']]. Within a group the concepts describe one thing (their masks intersect); groups add up."""
    groups = [entity_concepts(part) for part in _SPLIT.split(phrase)]
    return [g for g in groups if g]


def explanation_class(explanation: str | None) -> str:
    """The concept class of an explanation in the world's vocabulary: the class of its head noun, i.e.
    the last concept it names ('red star' -> object, 'striped' -> texture); 'other' when it names none."""
    names = entity_concepts(explanation or "")
    return CLASS_OF[names[-1]] if names else "other"
