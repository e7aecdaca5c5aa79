"""Training SAEs on activation sources: resumable, data-parallel, with curves."""

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
