"""The `mmsae` command tree: every sub-command is generated from one package's config dataclass.

Each entry of CONFIG_COMMANDS names "module:ConfigClass:run_function[:formatter]"; the module is imported only
when the command runs or shows its help, so `mmsae --help` stays fast. `mmsae.cli.configs` turns the dataclass into options (field docstrings are
the help) and adds `--config FILE.yaml|json`; a formatter `(result, cfg) -> str | (str, exit_code)` prints
the result for people and adds `--json` (without one the result is printed as JSON).

May import (the layers of pyproject.toml's importlinter contract): every package (it is the top layer; nothing
imports it).
"""

from __future__ import annotations

import importlib
import os

import click

CONFIG_COMMANDS: dict[str, str] = {
    "demo": "mmsae.pipeline.demo:DemoConfig:run_demo",
    "world sample": "mmsae.world.run:SampleConfig:run_sample:format_sample",
    "world mask": "mmsae.world.run:MaskConfig:run_mask:format_mask",
    "zoo list": "mmsae.zoo.run:ZooListConfig:run_zoo_list:format_zoo_list",
    "zoo eval": "mmsae.zoo.run:ZooEvalConfig:run_zoo_eval:format_zoo_eval",
    "zoo train": "mmsae.zoo.run:ZooTrainJob:run_zoo_train",
    "harvest": "mmsae.store.harvest:HarvestConfig:run_harvest:format_harvest",
    "train": "mmsae.train.run:TrainJob:run_train",
    "eval-sae": "mmsae.evals.run:EvalSAEConfig:run_eval_sae:format_eval_sae",
    "index": "mmsae.index.build:IndexConfig:run_index:format_index",
    "explain": "mmsae.explain.run:ExplainConfig:run_explain:format_explain",
    "serve-explainer": "mmsae.llm.server:ServeConfig:run_serve",
    "score": "mmsae.score.run:ScoreConfig:run_score:format_score",
    "crossmodal": "mmsae.saev.crossmodal:CrossmodalConfig:run_crossmodal",
    "filter score": "mmsae.saev.filter:FilterScoreConfig:run_filter_score",
    "filter select": "mmsae.saev.filter:FilterSelectConfig:run_filter_select",
    "finetune": "mmsae.finetune.run:FinetuneConfig:run_finetune",
    "view": "mmsae.view.app:ViewConfig:run_view",
    "export neuronpedia": "mmsae.view.neuronpedia:ExportConfig:run_export",
    "attribute": "mmsae.attribute.run:AttributeConfig:run_attribute",
    "steer": "mmsae.steer.run:SteerConfig:run_steer",
}
# Help for commands whose config class has no docstring of its own (a class docstring wins).
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
              "export": "Write the index in formats hosted viewers read.",
              "world": "The embedded procedural world.",
              "zoo": "The zoo of LMMs trained on the embedded world."}


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

        module, cls_name, func, *fmt = CONFIG_COMMANDS[full].split(":")
        mod = importlib.import_module(module)
        cls = getattr(mod, cls_name)
        own_doc = cls.__dict__.get("__doc__") and not cls.__doc__.startswith(f"{cls.__name__}(")
        return config_command(name, cls, getattr(mod, func), formatter=getattr(mod, fmt[0]) if fmt else None,
                              help=cls.__doc__ if own_doc else CONFIG_HELP.get(full) or class_summary(cls))


def command() -> click.Group:
    """The whole `mmsae` command tree (CONFIG_COMMANDS)."""
    return _ConfigGroup("mmsae", help="Sparse autoencoders for large multimodal models: harvest, train, index, "
                        "explain, score, steer.", no_args_is_help=True)


def main(argv: list[str] | None = None) -> None:
    """The `mmsae` entry point."""
    # The embedded default never downloads; users' HF models are local paths. Set here, not at import, so that
    # importing mmsae.cli from Python changes nothing in the caller's environment.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command().main(args=argv, prog_name="mmsae")
