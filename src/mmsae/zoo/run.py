"""`mmsae zoo list | eval | train`: list, evaluate and retrain the embedded model zoo."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsae.defaults import ZOO_MODELS as MODELS
from mmsae.defaults import ZOO_WEIGHTS as WEIGHTS
from mmsae.defaults import zoo_model_dir as model_dir

from .train import ZooTrainConfig


@dataclass
class ZooListConfig:
    """Each zoo model's name and directory."""

    root: Path = WEIGHTS
    """directory holding subject/ explainer/ clip/"""


def run_zoo_list(cfg: ZooListConfig) -> list[dict]:
    root = Path(cfg.root)
    return [{"name": name, "path": str((root / name).resolve()), "present": (root / name / "config.json").exists()}
            for name in MODELS]


def format_zoo_list(rows: list[dict], cfg: ZooListConfig) -> str:
    return "\n".join(f"{r['name']:10s} {r['path']}{'' if r['present'] else '  (missing)'}" for r in rows)


@dataclass
class ZooEvalConfig:
    """Recompute the zoo's accuracies on freshly generated held-out data."""

    root: Path = WEIGHTS
    """directory holding subject/ explainer/ clip/"""
    small: bool = False
    """a quicker, noisier evaluation"""
    write_cards: bool = False
    """rewrite each model's README.md with these numbers"""


def evaluate(root: Path = WEIGHTS, small: bool = False) -> dict:
    """All zoo metrics, flat keys as in the model cards (`subject.vqa_accuracy`, ...)."""
    from .evaluate import EvalConfig, eval_clip, eval_explainer, eval_subject

    cfg = (EvalConfig(subject_images=120, prior_images=80, explainer_sets=120, explainer_pool=12, clip_images=150)
           if small else EvalConfig())
    dirs = {name: model_dir(name, root) for name in ("subject", "explainer", "clip")}  # all missing ones fail first
    sections = {"subject": eval_subject(dirs["subject"], cfg), "explainer": eval_explainer(dirs["explainer"], cfg),
                "clip": eval_clip(dirs["clip"], cfg)}
    flat = {f"{m}.{k}": v for m, sec in sections.items() for k, v in sec.items()}
    flat["eval_config"] = asdict(cfg)
    return flat


def run_zoo_eval(cfg: ZooEvalConfig) -> dict:
    metrics = evaluate(Path(cfg.root), cfg.small)
    if cfg.write_cards:
        from .card import write_cards

        write_cards(Path(cfg.root), metrics)
    return metrics


def format_zoo_eval(metrics: dict, cfg: ZooEvalConfig) -> str:
    return "\n".join(f"{k:45s} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


@dataclass(frozen=True)
class ZooTrainJob(ZooTrainConfig):
    """Train the three zoo models from scratch (seeded; about an hour on 2 CPU cores); rerun to resume."""

    out: Path = Path("zoo-train")
    """working directory (finished stages are kept on rerun)"""
    install: bool = False
    """copy the trained models into the package's weights folder"""


def run_zoo_train(job: ZooTrainJob) -> dict:
    """Train into job.out (its resolved config as out/config.json); returns the stage timings."""
    from mmsae.io import write_config

    from .train import train_zoo

    out = Path(job.out)
    base = {f.name: getattr(job, f.name) for f in dataclasses.fields(ZooTrainConfig)}
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, job)
    timings = train_zoo(out, ZooTrainConfig(**base))
    if job.install:
        for name in MODELS:
            dest = WEIGHTS / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(out / name, dest)
    return {"timings": timings, "installed": str(WEIGHTS) if job.install else None}
