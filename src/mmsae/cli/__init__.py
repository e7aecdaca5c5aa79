"""The `mmsae` command: each sub-command is a thin shell over one package's Python API."""

from __future__ import annotations

import os
from pathlib import Path

import importlib

import click
import typer

# The embedded default never downloads; users' HF models are local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ..world.cli import app as world_app  # noqa: E402
from ..zoo.cli import app as zoo_app  # noqa: E402

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(world_app, name="world")
app.add_typer(zoo_app, name="zoo")


from mmsae.store.cli import harvest_command  # noqa: E402
app.command("harvest")(harvest_command)
from mmsae.evals.cli import eval_sae_command  # noqa: E402
from mmsae.explain.cli import serve_explainer_command  # noqa: E402

app.command("eval-sae")(eval_sae_command)
app.command("serve-explainer")(serve_explainer_command)
from mmsae.explain.cli import explain_command  # noqa: E402
app.command("explain")(explain_command)
from mmsae.index.cli import index_command  # noqa: E402
app.command("index")(index_command)
from mmsae.score.cli import score_command  # noqa: E402
app.command("score")(score_command)


# Commands generated from their config dataclasses (`mmsae.cli.configs`): name -> "module:ConfigClass:function",
# imported only when the command runs or shows its help. The older commands above move here one by one.
CONFIG_COMMANDS: dict[str, str] = {
    "demo": "mmsae.pipeline.demo:DemoConfig:run_demo",
    "train": "mmsae.train.run:TrainJob:run_train",
    "crossmodal": "mmsae.saev.crossmodal:CrossmodalConfig:run_crossmodal",
    "filter score": "mmsae.saev.filter:FilterScoreConfig:run_filter_score",
    "filter select": "mmsae.saev.filter:FilterSelectConfig:run_filter_select",
    "finetune": "mmsae.finetune.run:FinetuneConfig:run_finetune",
    "view": "mmsae.view.app:ViewConfig:run_view",
    "export neuronpedia": "mmsae.view.neuronpedia:ExportConfig:run_export",
    "attribute": "mmsae.attribute.run:AttributeConfig:run_attribute",
    "steer": "mmsae.steer.run:SteerConfig:run_steer",
}
CONFIG_HELP = {
    "demo": "The whole pipeline on the embedded world: writes OUT/report.md, OUT/metrics.json and pictures.",
    "crossmodal": "SAE-V cross-modal weight of every feature of an index (stored in it; Parquet export).",
    "filter score": "Score every record of a dataset by its SAE-V features (l0, cooccur, cosine) or a baseline.",
    "filter select": "Keep the top (or bottom) fraction of scored records, every original field preserved.",
    "finetune": "Supervised fine-tuning (LoRA or full) of an image-text-to-text model on chat records.",
    "view": "A local web viewer of a feature index (127.0.0.1 by default).",
    "export neuronpedia": "The index's text side in Neuronpedia's batch JSONL layout.",
    "attribute": "Attribute a prompt's next-token score to SAE features, positions, modalities and image patches.",
    "steer": "Answer one prompt unsteered and with SAE features clamped, added or scaled, side by side.",
}
GROUP_HELP = {"filter": "Score multimodal records with SAE-V features and keep the best.",
              "export": "Write the index in formats hosted viewers read."}


class _ConfigGroup(click.Group):
    """The commands of CONFIG_COMMANDS under `prefix` ("" for the top level), loaded on first use."""

    def __init__(self, *args, prefix: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.prefix = prefix

    def _children(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for full in CONFIG_COMMANDS:
            if full.startswith(self.prefix):
                rest = full[len(self.prefix):].split(" ")
                out[rest[0]] = full if len(rest) == 1 else None
        return out

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._children()))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        full = self._children().get(name, "missing")
        if full == "missing":
            return None
        if full is None:
            return _ConfigGroup(name, prefix=f"{self.prefix}{name} ", help=GROUP_HELP.get(name), no_args_is_help=True)
        from .configs import class_summary, config_command

        module, cls_name, func = CONFIG_COMMANDS[full].split(":")
        mod = importlib.import_module(module)
        cls = getattr(mod, cls_name)
        own_doc = cls.__dict__.get("__doc__") and not cls.__doc__.startswith(f"{cls.__name__}(")
        return config_command(name, cls, getattr(mod, func), help=cls.__doc__ if own_doc else CONFIG_HELP.get(full) or class_summary(cls))


def command() -> click.Group:
    """The whole `mmsae` command tree: the typer commands above plus CONFIG_COMMANDS."""
    typer_group = typer.main.get_command(app)
    group = _ConfigGroup("mmsae", help=typer_group.help, no_args_is_help=True)
    for name, cmd in typer_group.commands.items():
        group.add_command(cmd, name)
    return group


def main(argv: list[str] | None = None) -> None:
    """The `mmsae` entry point."""
    command().main(args=argv, prog_name="mmsae")
