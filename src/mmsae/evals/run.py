"""`mmsae eval-sae` as a Python API: reconstruction metrics per modality, and LM metrics with x̂ spliced in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsae.evals.metrics import SPLITS


@dataclass
class EvalSAEConfig:
    """FVU (mean-centred), L0, dead fraction, cosine and l2 ratio for all / text / image tokens; with
    --splice-records N also CE / KL loss recovered and delta LM loss with x̂ spliced into the model."""

    sae: Path
    """SAE folder: mmsae, SAELens or sparsify layout"""
    store: Path | None = None
    """activation store folder (modality per row from its token table), or a .safetensors/.pt file"""
    hookpoint: str | None = None
    """sub-folder of sae when it holds several hookpoints"""
    out: Path | None = None
    """write the JSON report here (its resolved config goes beside it, as <name>.config.json)"""
    max_tokens: int | None = None
    """evaluate at most this many tokens"""
    batch_size: int = 4096
    """tokens per SAE batch"""
    device: str = "cpu"
    """cpu | cuda | cuda:N"""
    splice_records: int = 0
    """splice x̂ into the model on this many records (0: no splicing)"""
    model: str | None = None
    """model to splice into (None: the store's, then the SAE's)"""
    data: str | None = None
    """data to splice on (None: the store's data spec)"""
    prompt: str | None = None
    """prompt template (None: the store's)"""
    layer: int | None = None
    """decoder block to splice at (None: the store's, then the SAE's)"""
    answer_marker: str | None = None
    """score only answer tokens: those after this marker (e.g. 'assistant :') up to the next special token"""
    splice_batch_size: int = 4
    """records per spliced forward pass"""
    model_dtype: str | None = None
    """load the model in this dtype (e.g. bfloat16)"""

    def __post_init__(self):
        self.sae = Path(self.sae)
        self.store = Path(self.store) if self.store is not None else None
        self.out = Path(self.out) if self.out is not None else None
        if self.splice_records < 0:
            raise ValueError(f"splice_records must be >= 0, got {self.splice_records!r}")
        if self.store is None and self.splice_records == 0:
            raise ValueError("give store (reconstruction metrics) and/or splice_records N (spliced LM metrics)")
        for name in ("batch_size", "splice_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens!r}")


def run_eval_sae(cfg: EvalSAEConfig) -> dict[str, Any]:
    """The report: {"sae", "metrics" (with a store), "splice" (with splice_records)}; written to cfg.out."""
    from mmsae.evals.runner import evaluate_sae, store_batches
    from mmsae.io import config_beside, write_config, write_json
    from mmsae.sae import SAE

    if not cfg.sae.exists():
        raise FileNotFoundError(f"no SAE at {cfg.sae}")
    sae_model = SAE.from_pretrained(cfg.sae, hookpoint=cfg.hookpoint)
    settings = None
    if cfg.splice_records > 0:  # resolve and check before any long work
        from mmsae.evals.splice_setup import resolve_splice_settings

        settings = resolve_splice_settings(sae_model.cfg, cfg.store, model=cfg.model, data=cfg.data,
                                           prompt=cfg.prompt, layer=cfg.layer)
    c = sae_model.cfg
    report: dict[str, Any] = {"sae": {"kind": c.kind, "d_in": c.d_in, "n_latents": c.n_latents, "k": c.k}}
    if cfg.store is not None:
        if cfg.store.is_dir():
            batches = store_batches(cfg.store, cfg.batch_size)
        else:
            from mmsae.store.files import load_activation_file

            acts = load_activation_file(cfg.store).float()
            batches = (acts[i : i + cfg.batch_size] for i in range(0, acts.shape[0], cfg.batch_size))
        report = evaluate_sae(sae_model, batches, max_tokens=cfg.max_tokens, device=cfg.device)
        report["store"] = str(cfg.store)
    report["sae"]["path"] = str(cfg.sae)
    if settings is not None:
        from mmsae.evals.splice_setup import run_splice

        report["splice"] = run_splice(settings, sae_model, cfg.splice_records, batch_size=cfg.splice_batch_size,
                                      device=cfg.device, model_dtype=cfg.model_dtype, answer_marker=cfg.answer_marker)
    if cfg.out is not None:
        write_json(cfg.out, report)
        write_config(cfg.out.parent, cfg, config_beside(cfg.out))
    return report


def format_eval_sae(report: dict[str, Any], cfg: EvalSAEConfig) -> str:
    """The metric tables, then one JSON line of the headline numbers (for scripts that grep the output)."""
    from mmsae.evals.runner import format_table

    parts = []
    if "metrics" in report:
        parts.append(format_table(report))
    if "splice" in report:
        from mmsae.evals.splice import format_splice_table

        parts.append(format_splice_table(report["splice"]))
    summary = {"metrics": report.get("metrics"),
               "splice": {s: report["splice"][s] for s in SPLITS} if "splice" in report else None}
    parts.append(json.dumps({k: v for k, v in summary.items() if v is not None}))
    return "\n".join(parts)
