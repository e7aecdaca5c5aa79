"""Training data for the zoo: rendered image caches, per-patch concept coverage, Q/A and explainer sets."""

from __future__ import annotations

from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch

from ..world import World, WorldConfig
from ..world.scene import Scene
from ..world.vocab import CLASS_OF, PAPER_CLASSES

# concepts a patch can show; position is a layout fact, not something a pixel shows
PATCH_CONCEPTS: tuple[str, ...] = tuple(n for n, c in CLASS_OF.items() if c != "position")
PATCH_INDEX = {n: i for i, n in enumerate(PATCH_CONCEPTS)}
EXPLAINABLE: tuple[str, ...] = tuple(n for n, c in CLASS_OF.items() if c in PAPER_CLASSES)


def coverage(scene: Scene) -> np.ndarray:
    """(grid, grid, C) fraction of each patch covered by each concept, on the world's patch grid."""
    g = scene.config.grid
    cov = np.zeros((g, g, len(PATCH_CONCEPTS)), dtype=np.float32)
    for name in scene.concepts():
        if name in PATCH_INDEX:
            cov[:, :, PATCH_INDEX[name]] = scene.patch_coverage(scene.concept_mask(name))
    return cov


@dataclass
class ImageCache:
    images: np.ndarray  # N x H x W x 3 uint8
    coverage: np.ndarray  # N x G x G x C float16
    scenes: list[Scene]  # specs only: masks are dropped to keep memory small

    def __len__(self) -> int:
        return len(self.images)


def _render(args: tuple[WorldConfig, int, int]) -> tuple[np.ndarray, np.ndarray, list[Scene]]:
    cfg, start, stop = args
    world = World(cfg)
    images, covs, scenes = [], [], []
    for i in range(start, stop):
        s = world[i]
        images.append(s.image)
        covs.append(coverage(s).astype(np.float16))
        s.concepts()  # cached, so the specs still answer questions after the masks are dropped
        s.part_masks = []
        scenes.append(s)
    return np.stack(images), np.stack(covs), scenes


def render_cache(cfg: WorldConfig, start: int, n: int, workers: int = 2) -> ImageCache:
    """Render scenes [start, start+n) of a world in parallel; identical for any number of workers."""
    chunk = max(1, n // (workers * 4))
    jobs = [(cfg, s, min(s + chunk, start + n)) for s in range(start, start + n, chunk)]
    if workers > 1:
        with get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render, jobs)
    else:
        parts = [_render(j) for j in jobs]
    return ImageCache(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        [s for p in parts for s in p[2]],
    )


def to_pixels(images_NHWC: np.ndarray) -> torch.Tensor:
    """uint8 images -> the zoo processors' normalisation (mean 0.5, std 0.5), N x 3 x H x W."""
    x = torch.from_numpy(images_NHWC).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def apply_patch_mask(images_NHWC: np.ndarray, visible_NGG: np.ndarray) -> np.ndarray:
    """Black out every patch not marked visible (the paper's masking of inactive patches)."""
    n, h = images_NHWC.shape[:2]
    p = h // visible_NGG.shape[1]
    pix = np.repeat(np.repeat(visible_NGG, p, axis=1), p, axis=2)
    return images_NHWC * pix[..., None].astype(np.uint8)


def pooled_targets(cov_NGGC: np.ndarray, visible_NGG: np.ndarray, factor: int, threshold: float) -> np.ndarray:
    """Multi-hot concept presence per (coarser) tower patch, counting visible pixels only."""
    vis = cov_NGGC.astype(np.float32) * visible_NGG[..., None]
    n, g, _, c = vis.shape
    pooled = vis.reshape(n, g // factor, factor, g // factor, factor, c).mean(axis=(2, 4))
    return (pooled > threshold).astype(np.float32)


def random_visibility(rng: np.random.Generator, n: int, grid: int, p_masked: float = 0.5) -> np.ndarray:
    """Half the images fully visible, the rest with a random share of patches blacked out."""
    vis = np.ones((n, grid, grid), dtype=bool)
    for i in range(n):
        if rng.random() < p_masked:
            vis[i] = rng.random((grid, grid)) < rng.uniform(0.1, 0.9)
    return vis


def concept_visibility(
    cov_GGC: np.ndarray, concept: str, rng: np.random.Generator, threshold: float = 0.25, noise: float = 0.08
) -> np.ndarray:
    """Patches an ideal feature for `concept` would light up, with some dropped and some spurious."""
    vis = cov_GGC[:, :, PATCH_INDEX[concept]].astype(np.float32) > threshold
    flip = rng.random(vis.shape)
    vis = np.where(vis, flip > noise, flip < noise * 0.3)
    if not vis.any():
        vis = cov_GGC[:, :, PATCH_INDEX[concept]] == cov_GGC[:, :, PATCH_INDEX[concept]].max()
    return vis


def shared_concepts(cov_NGGC: np.ndarray, visible_NGG: np.ndarray, threshold: float = 0.25) -> set[str]:
    """Concepts visible in every image of a masked set (empty: the set has no common pattern)."""
    seen = (cov_NGGC.astype(np.float32) > threshold) & visible_NGG[..., None]
    common = seen.any(axis=(1, 2)).all(axis=0)
    return {PATCH_CONCEPTS[i] for i in np.flatnonzero(common) if PATCH_CONCEPTS[i] in EXPLAINABLE}
