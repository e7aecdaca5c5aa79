"""`mmsae index`: a thin shell over mmsae.index.build_index."""

from __future__ import annotations

from typing import Annotated

import typer


def index_command(
    sae: Annotated[str, typer.Option("--sae", help="SAE checkpoint folder (mmsae, SAELens or sparsify).")],
    out: Annotated[str, typer.Option("--out", help="Index directory (rerun the same command to resume).")],
    data: Annotated[str, typer.Option("--data", help="world:n=N,seed=S | folder/jsonl/hf/parquet path.")] = (
        "world:n=1000,seed=0"),
    prompt: Annotated[str | None, typer.Option(help="Prompt template with <image> and {text}.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model directory; default: the zoo subject.")] = None,
    layer: Annotated[int | None, typer.Option(help="Decoder block (0-indexed); default: the SAE's hook layer.")] = None,
    top_n: Annotated[int, typer.Option("--top-n", help="Top images kept per feature.")] = 20,
    rank_by: Annotated[str, typer.Option("--rank-by", help="Rank images by the max or mean over their tokens.")] = (
        "max"),
    n_text: Annotated[int, typer.Option("--n-text", help="Top text tokens kept per feature (0: none).")] = 20,
    context_before: Annotated[int, typer.Option(help="Context tokens before a text token.")] = 8,
    context_after: Annotated[int, typer.Option(help="Context tokens after a text token.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 8,
    chunk_records: Annotated[int, typer.Option(help="Records between state saves (the unit of resume).")] = 256,
    sae_batch_tokens: Annotated[int, typer.Option(help="Tokens per SAE encode call.")] = 4096,
    max_records: Annotated[int | None, typer.Option(help="Index only the first N records.")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Reject longer sequences.")] = None,
    max_image_pixels: Annotated[int, typer.Option(help="Reject larger images.")] = 64_000_000,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")] = "auto",
    model_dtype: Annotated[str | None, typer.Option(help="Load the model in this dtype.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    workers: Annotated[int | None, typer.Option(
        help="Data-loader processes that load and encode ahead of the model (0: in process; "
             "default: one per core but one, at most 4). Any value gives the same index.")] = None,
) -> None:
    """Top images (with patch maps), top text contexts and statistics of every SAE feature -> OUT/index.duckdb."""
    from rich.console import Console

    from mmsae.models.base import AdapterError
    from mmsae.sae import SAEConfigError

    from .build import IndexConfig, build_index, default_model
    from .read import open_index, read_meta

    console = Console(stderr=True)
    try:
        cfg = IndexConfig(
            out=out, sae=sae, model=model or default_model(), data=data, prompt=prompt, layer=layer, top_n=top_n,
            rank_by=rank_by, n_text=n_text, context_before=context_before, context_after=context_after,
            batch_size=batch_size, chunk_records=chunk_records, sae_batch_tokens=sae_batch_tokens,
            max_records=max_records, max_seq_len=max_seq_len, max_image_pixels=max_image_pixels, device=device,
            model_dtype=model_dtype, progress=progress, workers=workers,
        )
        path = build_index(cfg)
    except (AdapterError, SAEConfigError, ValueError, FileNotFoundError, ImportError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    con = open_index(path)
    try:
        meta = read_meta(con)
        live, with_examples = con.execute(
            "SELECT count(*) FILTER (n_fires > 0), (SELECT count(DISTINCT feature) FROM examples) FROM features"
        ).fetchone()
    finally:
        con.close()
    console.print(
        f"{meta['n_latents']:,} features ({live:,} fired, {with_examples:,} with top images) over "
        f"{meta['n_tokens']:,} tokens of {meta['n_samples']:,} samples, {meta['n_rejects']} rejected -> {path}"
    )
