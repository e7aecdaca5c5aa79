"""`mmsae world ...`: look at the embedded world."""

from __future__ import annotations

from pathlib import Path

import typer

from . import World, WorldConfig
from .sheet import write_samples

app = typer.Typer(no_args_is_help=True, help="The embedded procedural world.")


@app.command("sample")
def sample(
    n: int = typer.Option(16, help="number of scenes"),
    out: Path = typer.Option(..., help="output directory"),
    seed: int = typer.Option(0, help="world seed"),
    start: int = typer.Option(0, help="index of the first scene"),
    image_size: int = typer.Option(64, help="image side in pixels"),
    patch_size: int = typer.Option(8, help="patch grid the masks are given on"),
) -> None:
    """Write a contact sheet (images, captions, a mask overlay per concept class) and the scenes' specs."""
    if n < 1:
        raise typer.BadParameter(f"--n must be at least 1, got {n}")
    try:
        world = World(WorldConfig(seed=seed, image_size=image_size, patch_size=patch_size))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    scenes = [world[i] for i in range(start, start + n)]
    write_samples(scenes, out)
    typer.echo(f"wrote {n} scenes to {out}/sheet.png and {out}/samples.jsonl")


@app.command("mask")
def mask(
    index: int = typer.Option(..., help="scene index"),
    concept: str = typer.Option(..., help="concept name, e.g. red, star, roof, striped, metal, sand"),
    out: Path = typer.Option(..., help="PNG to write (white = concept pixels)"),
    seed: int = typer.Option(0, help="world seed"),
) -> None:
    """Write the exact pixel mask of one concept in one scene."""
    from PIL import Image

    from ..io import write_atomic
    import io as _io

    try:
        m = World(WorldConfig(seed=seed))[index].concept_mask(concept)
    except (ValueError, IndexError) as err:
        raise typer.BadParameter(str(err)) from None
    buf = _io.BytesIO()
    Image.fromarray(m.astype("uint8") * 255).save(buf, format="PNG")
    write_atomic(out, buf.getvalue())
    typer.echo(f"{concept}: {int(m.sum())} pixels -> {out}")
