"""SAE kinds behind one interface, sparse kernels, and checkpoint formats (own, SAELens, sparsify).

May import (the layers of pyproject.toml's importlinter contract): store, models, data, world, viz, io, util,
defaults.
"""

from mmsae.sae.base import SAE, SAEOutput, default_lr, geometric_median
from mmsae.sae.batchtopk import BatchTopKSAE
from mmsae.sae.codes import Codes
from mmsae.sae.config import KINDS, SAEConfig, SAEConfigError
from mmsae.sae.jumprelu import JumpReLUSAE
from mmsae.sae.relu import ReLUSAE
from mmsae.sae.topk import TopKSAE

__all__ = [
    "KINDS",
    "SAE",
    "BatchTopKSAE",
    "Codes",
    "JumpReLUSAE",
    "ReLUSAE",
    "SAEConfig",
    "SAEConfigError",
    "SAEOutput",
    "TopKSAE",
    "default_lr",
    "geometric_median",
]
