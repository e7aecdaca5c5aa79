"""`mmsae eval-sae`: reconstruction metrics per modality and spliced LM metrics (registered by mmsae.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmsae.evals.metrics import SPLITS
from mmsae.evals.runner import evaluate_sae, format_table, store_batches
from mmsae.sae import SAE
from mmsae.sae.io_utils import atomic_file


def eval_sae_command(
    sae: Path = typer.Option(..., "--sae", help="SAE folder: mmsae, SAELens or sparsify layout."),
    store: Optional[Path] = typer.Option(None, "--store", help="Activation store folder (modality per row from its token table), or a .safetensors/.pt file."),
    hookpoint: Optional[str] = typer.Option(None, help="Sub-folder of --sae when it holds several hookpoints."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON report here."),
    max_tokens: Optional[int] = typer.Option(None, help="Evaluate at most this many tokens."),
    batch_size: int = typer.Option(4096),
    device: str = typer.Option("cpu"),
    splice_records: int = typer.Option(0, "--splice-records", help="Splice x̂ into the model on this many records (0: no splicing)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to splice into (default: the store's, then the SAE's)."),
    data: Optional[str] = typer.Option(None, "--data", help="Data to splice on (default: the store's data spec)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Prompt template (default: the store's)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Decoder block to splice at (default: the store's, then the SAE's)."),
    answer_marker: Optional[str] = typer.Option(None, help="Score only answer tokens: those after this marker (e.g. 'assistant :') up to the next special token."),
    splice_batch_size: int = typer.Option(4, help="Records per spliced forward pass."),
    model_dtype: Optional[str] = typer.Option(None, help="Load the model in this dtype (e.g. bfloat16)."),
) -> None:
    """FVU (mean-centred), L0, dead fraction, cosine and l2 ratio for all / text / image tokens; with
    --splice-records N also CE / KL loss recovered and delta LM loss with x̂ spliced into the model."""
    if store is None and splice_records <= 0:
        raise typer.BadParameter("give --store (reconstruction metrics) and/or --splice-records N (spliced LM metrics)")
    sae_model = SAE.from_pretrained(sae, hookpoint=hookpoint)
    settings = None
    if splice_records > 0:  # resolve and check before any long work
        from mmsae.evals.splice_setup import resolve_splice_settings

        try:
            settings = resolve_splice_settings(sae_model.cfg, store, model=model, data=data, prompt=prompt, layer=layer)
        except ValueError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    report: dict = {"sae": {"kind": sae_model.cfg.kind, "d_in": sae_model.cfg.d_in, "n_latents": sae_model.cfg.n_latents,
                            "k": sae_model.cfg.k}}
    if store is not None:
        if store.is_dir():
            batches = store_batches(store, batch_size)
        else:
            from mmsae.train.data import load_activation_file

            acts = load_activation_file(store).float()
            batches = (acts[i : i + batch_size] for i in range(0, acts.shape[0], batch_size))
        report = evaluate_sae(sae_model, batches, max_tokens=max_tokens, device=device)
        report["store"] = str(store)
    report["sae"]["path"] = str(sae)
    if settings is not None:
        from mmsae.evals.splice_setup import run_splice

        report["splice"] = run_splice(settings, sae_model, splice_records, batch_size=splice_batch_size, device=device,
                                      model_dtype=model_dtype, answer_marker=answer_marker)
    if out is not None:
        with atomic_file(out) as tmp:
            tmp.write_text(json.dumps(report, indent=2) + "\n")
    if "metrics" in report:
        typer.echo(format_table(report))
    if "splice" in report:
        from mmsae.evals.splice import format_splice_table

        typer.echo(format_splice_table(report["splice"]))
    summary = {"metrics": report.get("metrics"), "splice": {s: report["splice"][s] for s in SPLITS} if "splice" in report else None}
    typer.echo(json.dumps({k: v for k, v in summary.items() if v is not None}))
