"""Training SAEs on activation sources: resumable, data-parallel, with curves.

May import (the layers of pyproject.toml's importlinter contract): sae, store, models, data, world, viz, io,
util, defaults; not its sibling evals.
"""

from mmsae.train.config import TrainConfig
from mmsae.train.data import ActivationSource, StoreBatches, TensorBatches, load_activation_file, open_source
from mmsae.train.loop import Trainer, TrainingError, train

__all__ = [
    "ActivationSource",
    "StoreBatches",
    "TensorBatches",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "load_activation_file",
    "open_source",
    "train",
]
