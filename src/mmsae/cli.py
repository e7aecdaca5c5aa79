"""The `mmsae` command: each sub-command is a thin shell over one package's Python API."""

from __future__ import annotations

import os
from pathlib import Path

import typer

# The embedded default never downloads; users' HF models are local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .world.cli import app as world_app  # noqa: E402
from .zoo.cli import app as zoo_app  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(world_app, name="world")
app.add_typer(zoo_app, name="zoo")


@app.command("demo")
def demo(out: Path = typer.Option(Path("demo-out"), help="report directory")) -> None:
    """The whole pipeline on the embedded world: writes OUT/report.md, OUT/metrics.json and pictures."""
    from .demo import main

    try:
        main(out)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


from mmsae.store.cli import harvest_command  # noqa: E402
app.command("harvest")(harvest_command)
from mmsae.train.cli import train_command  # noqa: E402
from mmsae.evals.cli import eval_sae_command  # noqa: E402
from mmsae.explain.cli import serve_explainer_command  # noqa: E402

app.command("train")(train_command)
app.command("eval-sae")(eval_sae_command)
app.command("serve-explainer")(serve_explainer_command)
from mmsae.explain.cli import explain_command  # noqa: E402
app.command("explain")(explain_command)
from mmsae.index.cli import index_command  # noqa: E402
app.command("index")(index_command)
from mmsae.score.cli import score_command  # noqa: E402
app.command("score")(score_command)
