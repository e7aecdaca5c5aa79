"""Evaluate an SAE over activation batches (with per-row modality) and report JSON + a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from mmsae.evals.metrics import SPLITS, ReconstructionMetrics
from mmsae.sae import SAE


@torch.no_grad()
def evaluate_sae(sae: SAE, batches: Iterable[Any], max_tokens: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """`batches` yields acts_BD or (acts_BD, modality_B); returns {split: metrics} plus provenance."""
    sae = sae.to(device).eval()
    acc = ReconstructionMetrics(sae.cfg.n_latents)
    seen = dropped = 0
    for item in batches:
        acts_BD, modality = item if isinstance(item, tuple) else (item, None)
        if max_tokens is not None and seen >= max_tokens:
            break
        if max_tokens is not None and seen + acts_BD.shape[0] > max_tokens:
            keep = max_tokens - seen
            acts_BD, modality = acts_BD[:keep], None if modality is None else modality[:keep]
        if acts_BD.shape[1] != sae.cfg.d_in:
            raise ValueError(f"activation width {acts_BD.shape[1]} does not match the SAE's d_in {sae.cfg.d_in}")
        x = acts_BD.to(device, torch.float32)
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            dropped += int((~finite).sum())
            x = x[finite]
            modality = None if modality is None else np.asarray(modality)[finite.cpu().numpy()]
        codes = sae.encode(x)
        acc.update(x, sae.decode(codes), codes, modality)
        seen += acts_BD.shape[0]
    return {"sae": {"kind": sae.cfg.kind, "d_in": sae.cfg.d_in, "n_latents": sae.cfg.n_latents, "k": sae.cfg.k},
            "metrics": acc.compute(), "nonfinite_rows_dropped": dropped, "definitions": "FVU mean-centred per split over the eval set; special tokens excluded"}


def store_batches(root: str | Path, batch_size: int = 4096) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """Every row of an mmsae store in order, with its modality code from the token table."""
    from mmsae.store import ActivationStore

    store = ActivationStore(root)
    table = store.tokens()
    rows = table["row"].to_numpy(zero_copy_only=False)
    modality_col = table["modality"].combine_chunks()
    names = list(modality_col.dictionary.to_pylist()) if hasattr(modality_col, "dictionary") else None
    codes = modality_col.indices.to_numpy() if names else np.asarray(modality_col.to_numpy(zero_copy_only=False))
    from mmsae.evals.metrics import MODALITY_CODES

    if names:
        remap = np.array([MODALITY_CODES[n] for n in names], np.int8)
        codes = remap[codes]
    keep = ~np.isnan(rows.astype(np.float64))
    row_modality = np.full(store.n_rows, MODALITY_CODES["special"], np.int8)
    row_modality[rows[keep].astype(np.int64)] = codes[keep]
    for i, shard in enumerate(store.shards):
        acts = store.shard_acts(i)
        start = shard["row_start"]
        for off in range(0, acts.shape[0], batch_size):
            sl = slice(off, min(off + batch_size, acts.shape[0]))
            yield acts[sl].float(), row_modality[start + sl.start : start + sl.stop]


def format_table(report: dict[str, Any]) -> str:
    cols = ("n_tokens", "fvu", "l0", "dead_fraction", "cosine", "l2_ratio")
    lines = [f"{'split':<6} " + " ".join(f"{c:>13}" for c in cols)]
    for split in SPLITS:
        m = report["metrics"].get(split, {})
        if not m.get("n_tokens"):
            continue
        lines.append(f"{split:<6} " + " ".join(f"{m[c]:>13.4g}" if isinstance(m[c], float) else f"{m[c]:>13}" for c in cols))
    return "\n".join(lines)
