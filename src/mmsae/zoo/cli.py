"""`mmsae zoo ...`: list, evaluate and retrain the embedded model zoo."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import typer

from . import MODELS, WEIGHTS, model_dir

app = typer.Typer(no_args_is_help=True, help="The zoo of LMMs trained on the embedded world.")


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json", help="print JSON"), root: Path = typer.Option(WEIGHTS)) -> None:
    """Each zoo model's name and directory."""
    rows = []
    for name in MODELS:
        path = root / name
        rows.append({"name": name, "path": str(path.resolve()), "present": (path / "config.json").exists()})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for r in rows:
            typer.echo(f"{r['name']:10s} {r['path']}{'' if r['present'] else '  (missing)'}")


def evaluate(root: Path = WEIGHTS, small: bool = False) -> dict:
    """All zoo metrics, flat keys as in the model cards (`subject.vqa_accuracy`, ...)."""
    from .evaluate import EvalConfig, eval_clip, eval_explainer, eval_subject

    cfg = EvalConfig(subject_images=120, prior_images=80, explainer_sets=120, explainer_pool=12, clip_images=150) if small else EvalConfig()
    sections = {
        "subject": eval_subject(model_dir("subject", root), cfg),
        "explainer": eval_explainer(model_dir("explainer", root), cfg),
        "clip": eval_clip(model_dir("clip", root), cfg),
    }
    flat = {f"{m}.{k}": v for m, sec in sections.items() for k, v in sec.items()}
    flat["eval_config"] = asdict(cfg)
    return flat


@app.command("eval")
def eval_command(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    root: Path = typer.Option(WEIGHTS, help="directory holding subject/ explainer/ clip/"),
    small: bool = typer.Option(False, help="a quicker, noisier evaluation"),
    write_cards: bool = typer.Option(False, help="rewrite each model's README.md with these numbers"),
) -> None:
    """Recompute the zoo's accuracies on freshly generated held-out data."""
    try:
        metrics = evaluate(root, small)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if write_cards:
        from .card import write_cards as _write

        _write(root, metrics)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
    else:
        for k, v in metrics.items():
            if isinstance(v, float):
                typer.echo(f"{k:45s} {v:.4f}")


@app.command("train")
def train_command(
    out: Path = typer.Option(Path("zoo-train"), help="working directory (stages are resumed from here)"),
    install: bool = typer.Option(False, help="copy the trained models into the package's weights folder"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2),
) -> None:
    """Train the three zoo models from scratch (seeded; about an hour on 2 CPU cores)."""
    from .train import ZooTrainConfig, train_zoo

    timings = train_zoo(out, ZooTrainConfig(seed=seed, threads=threads))
    typer.echo(json.dumps(timings, indent=2))
    if install:
        for name in MODELS:
            dest = WEIGHTS / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(out / name, dest)
        typer.echo(f"installed into {WEIGHTS}")
