"""SAE evaluation: reconstruction metrics per modality and spliced LM metrics (CE/KL recovered, delta LM loss).

May import (the layers of pyproject.toml's importlinter contract): sae, store, models, data, world, viz, io,
util, defaults; not its sibling train.
"""

from mmsae.evals.lm import SpliceMetrics, ce_loss_recovered, token_ce, token_kl
from mmsae.evals.metrics import MODALITY_CODES, SPLITS, ReconstructionMetrics, modality_codes
from mmsae.evals.runner import evaluate_sae, format_table, store_batches
from mmsae.evals.splice import evaluate_splice, format_splice_table
from mmsae.evals.splice_setup import SpliceSettings, resolve_splice_settings, run_splice

__all__ = [
    "MODALITY_CODES",
    "SPLITS",
    "ReconstructionMetrics",
    "SpliceMetrics",
    "SpliceSettings",
    "ce_loss_recovered",
    "evaluate_sae",
    "evaluate_splice",
    "format_splice_table",
    "format_table",
    "modality_codes",
    "resolve_splice_settings",
    "run_splice",
    "store_batches",
    "token_ce",
    "token_kl",
]
