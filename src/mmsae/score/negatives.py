"""Non-activating images for the detection score: images where a feature is ~0.

The index keeps only each feature's top images, so whether a feature fires on any other image is not in
it. A pool of random records of the indexed data is streamed once through the indexed model and SAE
(the same capture loop as harvest and index), and each image's maximum activation of every scored
feature is kept; a feature's negatives are then drawn from the pool's images where it stays at or below
`tolerance` x its maximum activation in the index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ImageKey = tuple[int, int]  # (sample = record index, image_index)


@dataclass
class NegativePool:
    keys: list[ImageKey]  # the pool's images
    features: list[int]  # the columns of acts_IF
    acts_IF: np.ndarray  # max activation of each feature on each image (over the image's tokens)
    rejects: list[tuple[int, str, str]]  # records the model could not take: (index, id, reason)

    def negatives(self, feature: int, max_act: float, n: int, rng: np.random.Generator, tolerance: float = 0.01,
                  exclude: set[ImageKey] = frozenset()) -> list[ImageKey]:
        """Up to n images of the pool where `feature` is ~0, drawn without replacement."""
        col = self.features.index(feature)
        cut = tolerance * max(float(max_act), 0.0)
        ok = [i for i, k in enumerate(self.keys) if self.acts_IF[i, col] <= cut and k not in exclude]
        pick = rng.choice(len(ok), size=min(n, len(ok)), replace=False) if ok else []
        return [self.keys[ok[j]] for j in sorted(pick)]


def image_max_activations(captured, sae, features: list[int]) -> tuple[list[int], np.ndarray]:
    """For one captured record: (image indices, acts_JF) with the max over each image's tokens of the
    SAE codes of `features` (0 where the feature does not fire)."""
    from ..models.table import IMAGE

    table = captured.table
    on_image = np.flatnonzero(np.asarray(table.modality) == IMAGE)
    images = sorted({int(j) for j in np.asarray(table.image_index)[on_image]})
    acts_JF = torch.zeros(len(images), len(features))
    if not len(on_image):
        return images, acts_JF.numpy()
    device = next(sae.parameters()).device
    x_TD = captured.acts_SD[torch.as_tensor(on_image, device=captured.acts_SD.device)].to(device, torch.float32)
    codes = sae.encode(x_TD)
    col_of = torch.full((codes.n_latents,), -1, dtype=torch.long, device=device)
    col_of[torch.as_tensor(features, device=device)] = torch.arange(len(features), device=device)
    row_of = {j: r for r, j in enumerate(images)}
    img_T = torch.as_tensor([row_of[int(j)] for j in np.asarray(table.image_index)[on_image]], device=device)
    if codes.indices is None:
        vals_TK, cols_TK = codes.values[:, col_of >= 0], col_of[col_of >= 0].expand(len(x_TD), -1)
    else:
        vals_TK, cols_TK = codes.values, col_of[codes.indices]
    keep = cols_TK >= 0
    flat = (img_T[:, None].expand_as(cols_TK)[keep] * len(features) + cols_TK[keep]).cpu()
    out = acts_JF.view(-1).scatter_reduce(0, flat, vals_TK[keep].float().cpu(), reduce="amax", include_self=True)
    return images, out.view(len(images), len(features)).clamp(min=0).numpy()


def build_pool(meta: dict, features: list[int], n_records: int = 200, seed: int = 0, batch_size: int = 8,
               device: str | None = None, source=None, on_batch: Callable[[int], None] | None = None) -> NegativePool:
    """Stream `n_records` random records of the index's data (meta.data, meta.prompt) through its model
    (meta.model) and SAE (meta.sae) at meta.layer; clear errors when they cannot be found."""
    from ..data import open_source
    from ..models import load_adapter
    from ..sae import SAE
    from ..store.stream import capture_batches

    for key in ("model", "sae", "data", "layer"):
        if meta.get(key) in (None, ""):
            raise ValueError(f"the index meta has no {key!r}: the non-activating images for detection cannot be found")
    for key in ("model", "sae"):
        if not Path(str(meta[key])).exists():
            raise FileNotFoundError(f"detection needs the indexed {key} to find non-activating images, but "
                                    f"meta.{key} = {meta[key]!r} does not exist here")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sae = SAE.from_pretrained(str(meta["sae"]), device=device).eval()
    if max(features, default=-1) >= sae.cfg.n_latents:
        raise ValueError(f"feature {max(features)} is out of range for SAE {meta['sae']} ({sae.cfg.n_latents} latents)")
    adapter = load_adapter(str(meta["model"]), device=device)
    src = source if source is not None and not isinstance(source, str) else open_source(
        str(source or meta["data"]), prompt=meta.get("prompt"))
    order = np.random.default_rng(seed).permutation(len(src))[:n_records]
    rejects: list[tuple[int, str, str]] = []
    keys: list[ImageKey] = []
    rows: list[np.ndarray] = []
    with torch.no_grad():
        for consumed, batch in capture_batches(adapter, src, sorted(order.tolist()), int(meta["layer"]), batch_size,
                                               lambda i, rid, why: rejects.append((i, rid, why))):
            for cap in batch:
                images, acts_JF = image_max_activations(cap, sae, features)
                keys += [(cap.index, j) for j in images]
                rows.append(acts_JF)
            if on_batch is not None:
                on_batch(len(consumed))
    acts_IF = np.concatenate(rows) if rows else np.zeros((0, len(features)), np.float32)
    return NegativePool(keys, list(features), acts_IF, rejects)
