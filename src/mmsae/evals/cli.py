"""`mmsae eval-sae`: reconstruction metrics per modality (registered by mmsae.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmsae.evals.runner import evaluate_sae, format_table, store_batches
from mmsae.sae import SAE
from mmsae.sae.io_utils import atomic_file


def eval_sae_command(
    sae: Path = typer.Option(..., "--sae", help="SAE folder: mmsae, SAELens or sparsify layout."),
    store: Path = typer.Option(..., "--store", help="Activation store folder (modality per row from its token table), or a .safetensors/.pt file."),
    hookpoint: Optional[str] = typer.Option(None, help="Sub-folder of --sae when it holds several hookpoints."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON report here."),
    max_tokens: Optional[int] = typer.Option(None, help="Evaluate at most this many tokens."),
    batch_size: int = typer.Option(4096),
    device: str = typer.Option("cpu"),
) -> None:
    """FVU (mean-centred), L0, dead fraction, cosine and l2 ratio for all / text / image tokens."""
    model = SAE.from_pretrained(sae, hookpoint=hookpoint)
    if store.is_dir():
        batches = store_batches(store, batch_size)
    else:
        from mmsae.train.data import load_activation_file

        acts = load_activation_file(store).float()
        batches = (acts[i : i + batch_size] for i in range(0, acts.shape[0], batch_size))
    report = evaluate_sae(model, batches, max_tokens=max_tokens, device=device)
    report["sae"]["path"] = str(sae)
    report["store"] = str(store)
    if out is not None:
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(format_table(report))
    typer.echo(json.dumps(report["metrics"]))
