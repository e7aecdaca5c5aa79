"""`mmsae score`: a thin typer shell over mmsae.score.run_score."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def score_command(
    index: Path = typer.Option(..., "--index", help="index directory (holds index.duckdb with explanations)"),
    features: str = typer.Option(None, help="comma-separated feature ids (default: every explained feature)"),
    limit: int = typer.Option(None, help="score at most this many features"),
    explainer: str = typer.Option(None, help="explanation set: the explainer model (default: the largest set)"),
    prompt_version: str = typer.Option(None, help="explanation set: the prompt version"),
    iou: bool = typer.Option(True, "--iou/--no-iou", help="IoU score and its random baselines (random images, explanations, regions)"),
    clip: bool = typer.Option(True, "--clip/--no-clip", help="CLIP score and its random-explanation baseline"),
    detection: bool = typer.Option(False, "--detection", help="detection score (balanced accuracy of a judge)"),
    segmenter: str = typer.Option(None, help="world | grounded-sam (default: world on a world index)"),
    grounding_model: Path = typer.Option(None, help="GroundingDINO checkpoint directory (grounded-sam)"),
    sam_model: Path = typer.Option(None, help="SAM checkpoint directory (grounded-sam)"),
    box_threshold: float = typer.Option(0.3, help="GroundingDINO box threshold"),
    phrase_url: str = typer.Option(None, help="OpenAI-compatible LLM server for explanation -> entity phrase"),
    phrase_model: str = typer.Option(None, help="the model name that server serves (default: a rule)"),
    clip_model: Path = typer.Option(None, help="HF CLIP checkpoint (default: the zoo's CLIP)"),
    explainer_model: Path = typer.Option(None, help="detection judge: local HF LMM (default on the world: zoo subject)"),
    explainer_url: str = typer.Option(None, help="detection judge: OpenAI-compatible server instead"),
    explainer_name: str = typer.Option(None, help="the model name that judge server serves"),
    detection_template: str = typer.Option(None, help="detection template (detect-zoo-v1, detect-yesno-v1 or a JSON file)"),
    n_images: int = typer.Option(5, help="top images per feature"),
    threshold: float = typer.Option(0.0, help="activation region: patches above this fraction of the image's peak"),
    trials: int = typer.Option(100, help="random-baseline trials per feature"),
    negatives: int = typer.Option(None, help="non-activating images per feature (default: as many as top images)"),
    random_images: bool = typer.Option(True, "--random-images/--no-random-images",
                                       help="the paper's code's IoU baseline: the explanation and the feature on "
                                       "random images of the data (streams --pool-records through model + SAE)"),
    pool_records: int = typer.Option(200, help="random records streamed through model + SAE: non-activating images "
                                     "for detection, random images for the iou_random_images baseline"),
    seed: int = typer.Option(0, help="seed of the random baselines and the random-image pool"),
    chunk_size: int = typer.Option(16, help="features per transaction"),
    source: str = typer.Option(None, help="data source spec replacing the index's meta.data"),
    device: str = typer.Option(None, help="cpu / cuda (default: cuda when available)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON instead of a table"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
) -> None:
    """Score the explanations of an index (IoU, CLIP, detection, random baselines) into its `scores` table."""
    from rich.console import Console
    from rich.table import Table

    from .run import ScoreConfig, run_score
    from .summary import table_rows

    try:
        ids = [int(x) for x in features.split(",") if x.strip()] if features else None
    except ValueError:
        typer.echo(f"error: --features must be comma-separated integers, got {features!r}", err=True)
        raise typer.Exit(2) from None
    cfg = ScoreConfig(index=index, features=ids, limit=limit, explainer=explainer, prompt_version=prompt_version,
                      iou=iou, clip=clip, detection=detection, segmenter=segmenter, grounding_model=grounding_model,
                      sam_model=sam_model, box_threshold=box_threshold, phrase_url=phrase_url, phrase_model=phrase_model,
                      clip_model=clip_model, judge_model=explainer_model, judge_url=explainer_url,
                      judge_name=explainer_name, detection_template=detection_template, n_images=n_images,
                      threshold=threshold, trials=trials, n_negatives=negatives, random_images=random_images,
                      pool_records=pool_records, seed=seed,
                      chunk_size=chunk_size, source=source, device=device, progress=progress and not as_json)
    try:
        summary = run_score(cfg)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
        return
    console = Console()
    header, *rows = table_rows(summary)
    table = Table(title=f"scores of {summary['explainer']}/{summary['prompt_version']} explanations ({index})")
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    console.print(table)
    for name, value in summary["ratios"].items():
        console.print(f"{name}: {value:.3g}" if value is not None else f"{name}: -")
    run = summary["run"]
    console.print(f"features: {run['requested']} requested, {run['scored']} scored now, {run['already_scored']} already "
                  f"scored, {run['uninterpretable']} uninterpretable, {run['failed_explanation']} failed explanations, "
                  f"{run['no_explanation']} without explanation, {run['no_images']} without top images, "
                  f"{run['out_of_range']} out of range; {run['empty_segmentations']} empty segmentations this run (IoU 0)")
    trials_used = ", ".join(f"{m}: {t}" for m, t in summary["trials"].items())
    if trials_used:
        console.print(f"random-baseline trials per feature: {trials_used}")
    for e in summary["run_errors"][:20]:
        console.print(f"[red]feature {e['feature']} {e['metric']}: {e['reason']}[/red]")
    if len(summary["run_errors"]) > 20:
        console.print(f"... {len(summary['run_errors']) - 20} more errors in {index}/score-summary.json")
