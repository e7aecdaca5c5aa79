"""A pool of random images of the indexed data, with the scored features' activation maps on them.

The index keeps only each feature's top images, so what a feature does on any other image is not in it.
A pool of random records is streamed once through the indexed model and SAE (the same capture loop as
harvest and index), and for every image it keeps the scored features' per-patch activations (sparse)
and the patches' pixel boxes. Two scores draw on it:
- detection: a feature's non-activating images, where it stays at or below `tolerance` x its maximum;
- the random-images IoU baseline of the paper's code: the explanation and the feature's activation region
  on random images of the data instead of its top images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ImageKey = tuple[int, int]  # (sample = record index, image_index)


@dataclass
class PoolImage:
    """One pool image: its sample id, size (width, height), patch boxes and the scored features'
    activations as sparse (patch, column, value) triples."""

    sample_id: str
    size: tuple[int, int]
    box_P4: np.ndarray
    patch_N: np.ndarray  # int32 rows into box_P4
    col_N: np.ndarray  # int32 columns into ImagePool.features
    value_N: np.ndarray  # float32, > 0


@dataclass
class ImagePool:
    keys: list[ImageKey]  # the pool's images
    features: list[int]  # the columns of acts_IF
    acts_IF: np.ndarray  # max activation of each feature on each image (over the image's tokens)
    rejects: list[tuple[int, str, str]]  # records the model could not take: (index, id, reason)
    images: list[PoolImage] = field(default_factory=list)  # per key; empty when only maxima were kept

    def negatives(self, feature: int, max_act: float, n: int, rng: np.random.Generator, tolerance: float = 0.01,
                  exclude: set[ImageKey] = frozenset()) -> list[ImageKey]:
        """Up to n images of the pool where `feature` is ~0, drawn without replacement."""
        col = self.features.index(feature)
        cut = tolerance * max(float(max_act), 0.0)
        ok = [i for i, k in enumerate(self.keys) if self.acts_IF[i, col] <= cut and k not in exclude]
        pick = rng.choice(len(ok), size=min(n, len(ok)), replace=False) if ok else []
        return [self.keys[ok[j]] for j in sorted(pick)]

    def activation_map(self, row: int, feature: int) -> np.ndarray:
        """acts_P of `feature` over the patches of pool image `row` (0 where it does not fire)."""
        if not self.images:
            raise ValueError("this pool kept only per-image maxima, not activation maps")
        col, im = self.features.index(feature), self.images[row]
        acts_P = np.zeros(len(im.box_P4), dtype=np.float32)
        sel = im.col_N == col
        acts_P[im.patch_N[sel]] = im.value_N[sel]
        return acts_P


def image_activations(captured, sae, features: list[int]) -> tuple[list[int], np.ndarray, list[PoolImage]]:
    """For one captured record: (image indices, acts_JF, images) with the max over each image's tokens of
    the SAE codes of `features` (0 where the feature does not fire) and each image's activation maps."""
    from ..models.table import IMAGE

    table = captured.table
    on_image = np.flatnonzero(np.asarray(table.modality) == IMAGE)
    image_T = np.asarray(table.image_index)[on_image]
    images = sorted({int(j) for j in image_T})
    acts_JF = np.zeros((len(images), len(features)), np.float32)
    pool_images = []
    vals_TK = cols_TK = None
    if len(on_image):
        device = next(sae.parameters()).device
        x_TD = captured.acts_SD[torch.as_tensor(on_image, device=captured.acts_SD.device)].to(device, torch.float32)
        codes = sae.encode(x_TD)
        col_of = torch.full((codes.n_latents,), -1, dtype=torch.long, device=device)
        col_of[torch.as_tensor(features, device=device)] = torch.arange(len(features), device=device)
        if codes.indices is None:
            vals_TK, cols_TK = codes.values[:, col_of >= 0], col_of[col_of >= 0].expand(len(x_TD), -1)
        else:
            vals_TK, cols_TK = codes.values, col_of[codes.indices]
        vals_TK, cols_TK = vals_TK.float().cpu().numpy(), cols_TK.cpu().numpy()
    for r, j in enumerate(images):
        tok_P = np.flatnonzero(image_T == j)  # the image's tokens, in sequence order (= the index's patch order)
        cols_PK, vals_PK = cols_TK[tok_P], vals_TK[tok_P]
        patch_N, k_N = np.nonzero((cols_PK >= 0) & (vals_PK > 0))
        col_N, value_N = cols_PK[patch_N, k_N], vals_PK[patch_N, k_N]
        np.maximum.at(acts_JF[r], col_N, value_N)
        image = captured.record.images[j]
        pool_images.append(PoolImage(captured.id, (image.width, image.height), table.box[on_image[tok_P]],
                                     patch_N.astype(np.int32), col_N.astype(np.int32), value_N.astype(np.float32)))
    return images, acts_JF, pool_images


def _check_fingerprints(meta: dict) -> None:
    from ..store.files import model_fingerprint

    for key in ("model", "sae"):
        stored = meta.get(f"{key}_fingerprint")
        if stored and model_fingerprint(meta[key]) != stored:
            raise ValueError(f"the {key} at {meta[key]} changed since the index was built (fingerprint mismatch): "
                             f"its activations on random images would not be the indexed {key}'s")


def build_pool(meta: dict, features: list[int], n_records: int = 200, seed: int = 0, batch_size: int = 8,
               device: str | None = None, source=None, on_batch: Callable[[int], None] | None = None) -> ImagePool:
    """Stream `n_records` random records of the index's data (meta.data, prompt, max_pixels) through its model
    (meta.model) and SAE (meta.sae) at meta.layer; clear errors when they cannot be found or changed."""
    from ..index.read import index_source
    from ..models import load_adapter
    from ..sae import SAE
    from ..store.stream import capture_batches

    for key in ("model", "sae", "data", "layer"):
        if meta.get(key) in (None, ""):
            raise ValueError(f"the index meta has no {key!r}: random images of the data cannot be scored")
    for key in ("model", "sae"):
        if not Path(str(meta[key])).exists():
            raise FileNotFoundError(f"scoring random images of the data needs the indexed {key}, but "
                                    f"meta.{key} = {meta[key]!r} does not exist here")
    _check_fingerprints(meta)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sae = SAE.from_pretrained(str(meta["sae"]), device=device).eval()
    if max(features, default=-1) >= sae.cfg.n_latents:
        raise ValueError(f"feature {max(features)} is out of range for SAE {meta['sae']} ({sae.cfg.n_latents} latents)")
    adapter = load_adapter(str(meta["model"]), device=device)
    src = index_source(meta, source)
    order = np.random.default_rng(seed).permutation(len(src))[:n_records]
    rejects: list[tuple[int, str, str]] = []
    keys: list[ImageKey] = []
    rows: list[np.ndarray] = []
    images: list[PoolImage] = []
    with torch.no_grad():
        for consumed, batch in capture_batches(adapter, src, sorted(order.tolist()), int(meta["layer"]), batch_size,
                                               lambda i, rid, why: rejects.append((i, rid, why))):
            for cap in batch:
                idx, acts_JF, pool_images = image_activations(cap, sae, features)
                keys += [(cap.index, j) for j in idx]
                rows.append(acts_JF)
                images += pool_images
            if on_batch is not None:
                on_batch(len(consumed))
    acts_IF = np.concatenate(rows) if rows else np.zeros((0, len(features)), np.float32)
    return ImagePool(keys, list(features), acts_IF, rejects, images)
