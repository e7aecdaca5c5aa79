"""Downstream metrics with x̂ spliced into the LMM: CE loss recovered, KL, delta LM loss.

The splicing itself (a forward hook at the SAE's layer that replaces the residual stream with x̂,
zero or the mean) belongs to the model adapters; these functions take the resulting logits.
Conventions: `logits_BSV[:, t]` is scored against `labels_BS[:, t]` (already shifted) and only
where `mask_BS` is true (answer tokens, typically). Sums are float64 and streamed, so any number
of batches can be pooled; `split` names which positions were replaced (all / text / image).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor


def token_ce(logits_BSV: Tensor, labels_BS: Tensor) -> Tensor:
    """Per-token cross-entropy in float64, [B, S]."""
    return F.cross_entropy(logits_BSV.double().transpose(1, 2), labels_BS, reduction="none")


def token_kl(clean_BSV: Tensor, other_BSV: Tensor) -> Tensor:
    """KL(clean ‖ other) per token in float64, [B, S]."""
    lp = F.log_softmax(clean_BSV.double(), dim=-1)
    lq = F.log_softmax(other_BSV.double(), dim=-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def ce_loss_recovered(ce_clean: float, ce_sae: float, ce_ablated: float) -> float:
    """(CE_ablated − CE_sae) / (CE_ablated − CE_clean): 1 = as good as clean, 0 = as bad as ablation."""
    denom = ce_ablated - ce_clean
    return (ce_ablated - ce_sae) / denom if denom != 0 else float("nan")


class SpliceMetrics:
    """Streams CE (clean, SAE, zero- and mean-ablated), KL(clean ‖ SAE) and delta LM loss."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    @torch.no_grad()
    def update(self, clean_BSV: Tensor, sae_BSV: Tensor, labels_BS: Tensor, mask_BS: Tensor, split: str = "all",
               zero_BSV: Tensor | None = None, mean_BSV: Tensor | None = None) -> None:
        m = mask_BS.bool()
        s = self.sums[split]
        s["n"] += float(m.sum())
        s["ce_clean"] += float(token_ce(clean_BSV, labels_BS)[m].sum())
        s["ce_sae"] += float(token_ce(sae_BSV, labels_BS)[m].sum())
        s["kl_sae"] += float(token_kl(clean_BSV, sae_BSV)[m].sum())
        for name, logits in (("zero", zero_BSV), ("mean", mean_BSV)):
            if logits is not None:
                s[f"ce_{name}"] += float(token_ce(logits, labels_BS)[m].sum())
                s[f"kl_{name}"] += float(token_kl(clean_BSV, logits)[m].sum())

    def compute(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for split, s in self.sums.items():
            n = max(s["n"], 1.0)
            r = {k: v / n for k, v in s.items() if k != "n"}
            r["n_tokens"] = int(s["n"])
            r["delta_lm_loss"] = r["ce_sae"] - r["ce_clean"]
            for name in ("zero", "mean"):
                if f"ce_{name}" in r:
                    r[f"ce_loss_recovered_{name}"] = ce_loss_recovered(r["ce_clean"], r["ce_sae"], r[f"ce_{name}"])
            out[split] = r
        return out
