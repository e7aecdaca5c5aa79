"""`mmsae harvest`: a thin shell over mmsae.store.harvest."""

from __future__ import annotations

from typing import Annotated

import typer


def harvest_command(
    out: Annotated[str, typer.Option("--out", help="Store directory (rerun the same command to resume).")],
    layer: Annotated[int, typer.Option("--layer", help="Decoder block L, 0-indexed (paper 'layer L+1').")],
    model: Annotated[str | None, typer.Option("--model", help="Model directory; default: the zoo subject.")] = None,
    data: Annotated[str, typer.Option("--data", help="world:n=N,seed=S | folder/jsonl/hf/parquet path.")] = (
        "world:n=1000,seed=0"),
    prompt: Annotated[str | None, typer.Option(help="Prompt template with <image> and {text}.")] = None,
    tokens: Annotated[str, typer.Option(help="Training rows: all | image | text.")] = "all",
    include_special: Annotated[bool, typer.Option(help="Also store BOS/newline/... rows.")] = False,
    dtype: Annotated[str, typer.Option(help="Stored dtype: bfloat16 | float32 | float16.")] = "bfloat16",
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 8,
    records_per_shard: Annotated[int, typer.Option(help="Records per shard (unit of resume; held in RAM).")] = 128,
    max_records: Annotated[int | None, typer.Option(help="Harvest only the first N records.")] = None,
    max_seq_len: Annotated[int | None, typer.Option(help="Reject longer sequences.")] = None,
    max_image_pixels: Annotated[int, typer.Option(help="Reject larger images.")] = 64_000_000,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda:N.")] = "auto",
    model_dtype: Annotated[str | None, typer.Option(help="Load the model in this dtype.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    workers: Annotated[int | None, typer.Option(
        help="Data-loader processes that load and encode ahead of the model (0: in process; "
             "default: one per core but one, at most 4). Any value gives the same store.")] = None,
) -> None:
    """Capture the residual stream after decoder block LAYER into a resumable store.

    Under torchrun each rank harvests every WORLD_SIZE-th shard and rank 0 merges the manifest."""
    from rich.console import Console

    from mmsae.models.base import AdapterError

    from .harvest import HarvestConfig, default_model, harvest

    console = Console(stderr=True)
    try:
        cfg = HarvestConfig(
            out=out, model=model or default_model(), layer=layer, data=data, prompt=prompt, tokens=tokens,
            include_special=include_special, dtype=dtype, batch_size=batch_size,
            records_per_shard=records_per_shard, max_records=max_records, max_seq_len=max_seq_len,
            max_image_pixels=max_image_pixels, device=device, model_dtype=model_dtype, progress=progress,
            workers=workers,
        )
        manifest = harvest(cfg)
    except (AdapterError, ValueError, FileNotFoundError, ImportError) as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if manifest is not None:
        c = manifest["counts"]
        console.print(
            f"{manifest['n_rows']:,} rows (d_in {manifest['d_in']}) from {manifest['n_samples']:,} samples, "
            f"{manifest['n_rejects']} rejected -> {out}\n"
            f"  rows   text {c['rows']['text']:,}  image {c['rows']['image']:,}  special {c['rows']['special']:,}\n"
            f"  tokens text {c['tokens']['text']:,}  image {c['tokens']['image']:,}  special {c['tokens']['special']:,}"
        )
