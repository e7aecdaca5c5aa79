"""SAE evaluation: reconstruction metrics per modality and LM-splicing metrics."""

from mmsae.evals.lm import SpliceMetrics, ce_loss_recovered, token_ce, token_kl
from mmsae.evals.metrics import MODALITY_CODES, SPLITS, ReconstructionMetrics, modality_codes
from mmsae.evals.runner import evaluate_sae, format_table, store_batches

__all__ = [
    "MODALITY_CODES",
    "SPLITS",
    "ReconstructionMetrics",
    "SpliceMetrics",
    "ce_loss_recovered",
    "evaluate_sae",
    "format_table",
    "modality_codes",
    "store_batches",
    "token_ce",
    "token_kl",
]
