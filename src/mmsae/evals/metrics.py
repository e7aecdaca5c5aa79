"""Reconstruction metrics streamed with float64 sums, split by token modality.

Definitions (REFERENCE §3): FVU = Σ‖x − x̂‖² / Σ‖x − μ‖² with μ the mean over the whole eval set
(per split), merged across batches exactly with Chan's parallel-variance update; L0 = mean number of
non-zero latents per token; dead fraction = latents that never fired on the split's tokens;
cosine = mean_t cos(x_t, x̂_t); l2 ratio = mean_t ‖x̂_t‖ / ‖x_t‖. "all" is text + image tokens:
special tokens (BOS, pad, separators) are excluded from every split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mmsae.sae.codes import Codes

MODALITY_CODES = {"text": 0, "image": 1, "special": 2}  # the store's token-table codes
SPLITS = ("all", "text", "image")


def modality_codes(modality: Sequence[Any] | np.ndarray | Tensor | None, n: int) -> np.ndarray | None:
    """int codes (0 text, 1 image, 2 special) from ints or strings; None means all text+image."""
    if modality is None:
        return None
    arr = modality.cpu().numpy() if isinstance(modality, Tensor) else np.asarray(modality)
    if arr.shape != (n,):
        raise ValueError(f"modality has shape {arr.shape}, expected ({n},)")
    if arr.dtype.kind in "US O":
        try:
            return np.array([MODALITY_CODES[str(m)] for m in arr], np.int8)
        except KeyError as e:
            raise ValueError(f"unknown modality {e}; expected one of {sorted(MODALITY_CODES)}") from None
    return arr.astype(np.int8)


@dataclass
class _SplitSums:
    n_latents: int
    n: int = 0
    mean_D: Tensor | None = None
    m2: float = 0.0  # Σ‖x − mean‖² over the tokens seen
    sse: float = 0.0
    sum_cos: float = 0.0
    sum_l2_ratio: float = 0.0
    sum_l0: float = 0.0
    fired_F: Tensor = field(default=None)  # type: ignore[assignment]

    def add(self, x64_BD: Tensor, xhat64_BD: Tensor, active_BF_or_idx: tuple[Tensor, Tensor]) -> None:
        n_b = x64_BD.shape[0]
        if n_b == 0:
            return
        mean_b = x64_BD.mean(0)
        m2_b = float(((x64_BD - mean_b) ** 2).sum())
        if self.mean_D is None:
            self.mean_D, self.m2, self.n = mean_b, m2_b, n_b
        else:
            n_new = self.n + n_b
            delta = mean_b - self.mean_D
            self.m2 += m2_b + float((delta**2).sum()) * self.n * n_b / n_new
            self.mean_D = self.mean_D + delta * (n_b / n_new)
            self.n = n_new
        err_B = ((x64_BD - xhat64_BD) ** 2).sum(1)
        self.sse += float(err_B.sum())
        xn_B, hn_B = x64_BD.norm(dim=1), xhat64_BD.norm(dim=1)
        self.sum_cos += float(((x64_BD * xhat64_BD).sum(1) / (xn_B * hn_B).clamp_min(1e-30)).sum())
        self.sum_l2_ratio += float((hn_B / xn_B.clamp_min(1e-30)).sum())
        l0_B, fired_F = active_BF_or_idx
        self.sum_l0 += float(l0_B.sum())
        self.fired_F = fired_F if self.fired_F is None else self.fired_F + fired_F

    def result(self) -> dict[str, float]:
        if self.n == 0:
            return {"n_tokens": 0}
        fvu = self.sse / self.m2 if self.m2 > 0 else float("nan")
        fired = self.fired_F if self.fired_F is not None else torch.zeros(self.n_latents, dtype=torch.int64)
        return {
            "n_tokens": self.n,
            "fvu": fvu,
            "explained_variance": 1.0 - fvu,
            "mse": self.sse / self.n,
            "l0": self.sum_l0 / self.n,
            "dead_fraction": float((fired == 0).double().mean()),
            "cosine": self.sum_cos / self.n,
            "l2_ratio": self.sum_l2_ratio / self.n,
        }


class ReconstructionMetrics:
    """Accumulate over batches; `compute()` returns {split: {metric: value}}."""

    def __init__(self, n_latents: int):
        self.n_latents = n_latents
        self.splits = {s: _SplitSums(n_latents) for s in SPLITS}

    @torch.no_grad()
    def update(self, x_BD: Tensor, xhat_BD: Tensor, codes: Codes, modality: Any = None) -> None:
        codes_m = modality_codes(modality, x_BD.shape[0])
        x64, xhat64 = x_BD.detach().double().cpu(), xhat_BD.detach().double().cpu()
        values = codes.values.detach().cpu()
        indices = codes.indices.cpu() if codes.indices is not None else None
        for split in SPLITS:
            if codes_m is None:
                if split != "all":
                    continue
                sel = torch.ones(x64.shape[0], dtype=torch.bool)
            elif split == "all":
                sel = torch.from_numpy(codes_m != MODALITY_CODES["special"])
            else:
                sel = torch.from_numpy(codes_m == MODALITY_CODES[split])
            sub = Codes(values[sel], indices[sel] if indices is not None else None, self.n_latents)
            self.splits[split].add(x64[sel], xhat64[sel], (sub.active_B(), sub.fired_F()))

    def compute(self) -> dict[str, dict[str, float]]:
        return {s: acc.result() for s, acc in self.splits.items()}
