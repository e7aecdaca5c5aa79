"""The oracle explainer: for each feature, the one world concept whose exact mask has the best IoU with the
feature's top-image activation regions ("unable" when even that is at or below a cut).

No explainer has it; it bounds what any single-concept explanation can reach on an SAE's features under the
IoU protocol, so a model / random ratio can be read against this world's ceiling. Scored against the same
random-explanation baseline as the model (another explained feature's concept on the same top images, here as
an exact expectation over the other explained features instead of sampled trials).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CUT = 0.2  # the cut the report quotes (the ceiling benchmark's headline)


def oracle_vocabulary(pairs: bool = False) -> list[str]:
    """The zoo explainer's 39 names; with `pairs`, also every colour / texture / material x object kind."""
    from ..world.vocab import COLOURS, KINDS, MATERIALS, TEXTURES
    from ..zoo.data import EXPLAINABLE

    names = list(EXPLAINABLE)
    if pairs:
        names += [f"{a} {kind}" for attrs in (COLOURS, TEXTURES, MATERIALS) for a in attrs for kind in KINDS]
    return names


@dataclass
class OracleIoU:
    """IoU of every (feature, concept): `iou_FC[i, j]` is the mean over feature i's top images of the IoU of
    concept j's exact mask with the activation region (the same region and mask as the IoU score)."""

    features: list[int]
    vocabulary: list[str]
    iou_FC: np.ndarray

    @property
    def best_F(self) -> np.ndarray:
        return self.iou_FC.max(1)

    @property
    def concept_F(self) -> np.ndarray:
        return self.iou_FC.argmax(1)

    def best(self) -> dict[int, tuple[str, float]]:
        """feature -> (the oracle's concept, its IoU)."""
        return {f: (self.vocabulary[c], float(b)) for f, c, b in zip(self.features, self.concept_F, self.best_F)}

    def summary(self, cut: float = CUT) -> dict | None:
        """The oracle at one cut: explained count, mean IoU, random-explanation IoU and their ratio;
        None when fewer than two features pass the cut (no other feature to draw a random explanation from)."""
        ok = np.flatnonzero(self.best_F > cut)
        if len(ok) < 2:
            return None
        concept_F = self.concept_F
        # random explanation: another explained feature's concept, each equally likely (an exact expectation)
        picked_MO = self.iou_FC[np.ix_(ok, concept_F[ok])]
        rand_M = (picked_MO.sum(1) - np.diag(picked_MO)) / (len(ok) - 1)
        iou_model = float(self.best_F[ok].mean())
        return {"explained": int(len(ok)), "iou": iou_model, "iou_random_expl": float(rand_M.mean()),
                "ratio": float(iou_model / rand_M.mean()) if rand_M.mean() > 0 else None,
                "compositions": int(sum(" " in self.vocabulary[concept_F[i]] for i in ok)),
                "features": [self.features[i] for i in ok], "iou_F": self.best_F[ok].tolist(), "iou_random_F": rand_M.tolist()}


def oracle_iou(index_dir: Path, features: list[int], vocabulary: list[str] | None = None, n_images: int = 5,
               threshold: float = 0.0) -> OracleIoU:
    """Every concept of `vocabulary` (default: the explainer's) against the top `n_images` activation regions
    of each feature (`threshold` as in the IoU score), with the world's exact masks."""
    from ..index import open_index
    from ..index.read import feature_examples_many
    from ..score import WorldSegmenter, iou, region_mask

    vocabulary = vocabulary or oracle_vocabulary()
    con = open_index(index_dir)
    try:
        tops = feature_examples_many(con, features, n_images)
    finally:
        con.close()
    seg = WorldSegmenter()
    # segment() re-renders the scene for every concept; one render per top image is enough
    seg.scene = functools.lru_cache(maxsize=4 * n_images)(seg.scene)
    iou_FC = np.zeros((len(features), len(vocabulary)))
    for i, f in enumerate(features):
        examples = tops.get(f, [])
        regions = [region_mask(t.box, t.acts, (t.width, t.height), threshold) for t in examples]
        for j, concept in enumerate(vocabulary):
            if examples:
                iou_FC[i, j] = np.mean([iou(seg.segment(None, concept, t.sample_id), r) for t, r in zip(examples, regions)])
    return OracleIoU(list(features), vocabulary, iou_FC)


def oracle(index_dir: Path, features: list[int], cuts: tuple[float, ...] = (CUT,),
           vocabulary: list[str] | None = None) -> dict:
    """The oracle explainer's summary at each cut (keys: the cut as a string), per-feature lists left out."""
    o = oracle_iou(index_dir, features, vocabulary)
    out = {}
    for cut in cuts:
        s = o.summary(cut)
        if s is not None:
            out[str(cut)] = {k: v for k, v in s.items() if k not in ("features", "iou_F", "iou_random_F")}
    return out
