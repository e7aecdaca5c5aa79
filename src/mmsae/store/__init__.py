"""The activation store: resumable sharded harvest, Parquet token table, manifest, shuffled reader.

Layout of a store DIR:
  manifest.json          model (path, fingerprint, family), layer, dtype, d_in, counts, mean, shards
  harvest.json           the settings a resumed run must match
  rejects.jsonl          one {"index", "id", "reason"} per skipped record
  shards/shard-K.safetensors  "acts" [rows, d_in] + float64 "sum_D"
  shards/shard-K.parquet      token table of the shard's records (every token; shard_row null when
                              the token is not a training row)
  shards/shard-K.json         commit marker (written last)

May import (the layers of pyproject.toml's importlinter contract): models, data, world, viz, io, util, defaults.
"""

from .harvest import HarvestConfig, harvest
from .reader import ActivationStore, Batch
from .shard import SELECTIONS, selected

__all__ = ["SELECTIONS", "ActivationStore", "Batch", "HarvestConfig", "harvest", "selected"]
