"""Attribution of a model output to SAE features, positions, modalities and image patches in one pass.

    attr = attribute(adapter, sae, layer, adapter.encode(prompts), "yes", "no")   # d = logit(yes) − logit(no)
    attr.table()              # example, feature, position, modality, token, attribution, exact_effect
    attr.per_feature(0)       # summed over positions, largest |attribution| first (error term: feature −1)
    attr.modality_share()     # {"text", "image", "special", "error"} shares of the total |attribution|
    attr.heatmap(0, 0, image) # per-patch attribution painted on the original image

One forward and one backward give −z·∂d/∂z for every active feature at every position (attribution
patching with zero as the patch, as in feature-circuits); `exact_top=N` checks the top N by rerunning
with each zeroed, `ig_steps=n` averages the gradient along the path to zero (integrated gradients).
`mmsae attribute` (mmsae.attribute.run) is the command line.

May import (the layers of pyproject.toml's importlinter contract): explain, score, llm, index, train, evals,
sae, store, models, data, world, viz, io, util, defaults; not its siblings steer, saev, finetune.
"""

from .core import attribute
from .exact import exact_effects
from .readout import METRICS, Readout, make_readout
from .result import ERROR, Attribution

__all__ = ["ERROR", "METRICS", "Attribution", "Readout", "attribute", "exact_effects", "make_readout"]
