"""The SAE-V data-filtering experiment in miniature, on the world where every record's quality is known.

A base model that has not learnt the world's VQA is fine-tuned (`base='projector'`, the default: the zoo
subject with its projector re-initialised, LLaVA's stage-1 situation: the language model knows the answer
words, nothing of what the image tokens mean, and scores 0 on held-out VQA; `base='decoder'`: the subject's
vision tower with a fresh projector and a small random language model, which learns far slower) on a corrupted instruction set:
all of it, the top share by each score, and the clean records only (the oracle); equal steps (the budget of
the full-data run) and equal epochs. Scores are computed by the caller (`mmsae.saev` sits beside this
package, so the benchmark and the demo stage pass its scores in); this module adds `random` and IFD.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io import write_json
from .config import FinetuneConfig
from .corrupt import CORRUPTIONS, clean_items, read_labels, write_instruction_set

EVAL_WORLD_SEED = 1_000_003  # held-out scenes: never a training seed


@dataclass
class ExperimentConfig:
    n_train: int = 2000
    n_eval: int = 400
    fraction: float = 0.4
    keeps: tuple[float, ...] = (0.2, 0.5, 0.7)
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: tuple[str, ...] = ("steps", "epochs")
    epochs: float = 3.0  # of the full-data run; 'steps' gives every arm its step count
    batch: int = 16
    lr: float = 1e-3
    base: str = "projector"  # or "decoder" (see the module docstring)
    hidden: int = 64  # the 'decoder' base's language model
    layers: int = 2
    warm_fraction: float = 0.1  # IFD's brief-experience model trains on this share (Cherry LLM)
    seed: int = 0
    extra: dict = field(default_factory=dict)


def fresh_base(subject: str | Path, out: Path, kind: str, seed: int, hidden: int = 64, layers: int = 2) -> Path:
    """A base that has not learnt the task, as an HF checkpoint: 'projector' (the subject, projector
    re-initialised) or 'decoder' (the subject's vision tower, fresh projector + small random language model)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..io import atomic_dir

    out = Path(out)
    if (out / "config.json").exists():
        return out
    if kind not in ("projector", "decoder"):
        raise ValueError(f"base must be 'projector' or 'decoder', got {kind!r}")
    trained = AutoModelForImageTextToText.from_pretrained(subject)
    torch.manual_seed(seed)
    if kind == "projector":
        model = trained
        for mod in model.model.multi_modal_projector.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
    else:
        cfg = trained.config
        text = cfg.get_text_config()
        text.hidden_size, text.num_hidden_layers, text.intermediate_size = hidden, layers, 4 * hidden
        text.head_dim = hidden // text.num_attention_heads
        model = AutoModelForImageTextToText.from_config(cfg)
        model.model.vision_tower.load_state_dict(trained.model.vision_tower.state_dict())
    with atomic_dir(out) as d:
        model.save_pretrained(d)
        AutoProcessor.from_pretrained(subject).save_pretrained(d)
    return out


def auroc(scores: dict[str, float], labels: dict[str, dict]) -> dict[str, float]:
    """P(score of a clean record > score of a corrupted one), ties half; overall and per corruption kind."""
    def one(pos: list[float], neg: list[float]) -> float:
        if not pos or not neg:
            return float("nan")
        a, b = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
        return float((a > b).mean() + 0.5 * (a == b).mean())

    lowest = min(scores.values()) - 1 if scores else 0.0  # records a scorer rejected rank last
    s = {k: scores.get(k, lowest) for k in labels}
    clean = [s[k] for k, v in labels.items() if v["corruption"] is None]
    out = {"all": one(clean, [s[k] for k, v in labels.items() if v["corruption"] is not None])}
    for kind in CORRUPTIONS:
        out[kind] = one(clean, [s[k] for k, v in labels.items() if v["corruption"] == kind])
    return out


def top_ids(scores: dict[str, float], ids: list[str], keep: float) -> list[str]:
    lowest = min(scores.values()) - 1 if scores else 0.0
    order = sorted(ids, key=lambda k: (-scores.get(k, lowest), k))
    return order[: max(1, int(round(keep * len(ids))))]


def write_subset(data_dir: Path, name: str, ids: list[str]) -> str:
    """A jsonl of the chosen records beside the full set (so image paths stay relative to it)."""
    keep = set(ids)
    lines = [ln for ln in (data_dir / "instruct.jsonl").read_text().splitlines() if json.loads(ln)["id"] in keep]
    path = data_dir / f"sel-{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return f"jsonl:{path}"


def prepare(out: Path, cfg: ExperimentConfig, subject: str | Path) -> dict:
    """The corrupted set, its labels, the held-out clean questions and the base model."""
    data_dir = Path(out) / "data"
    if not (data_dir / "labels.json").exists():
        write_instruction_set(data_dir, cfg.n_train, fraction=cfg.fraction, seed=cfg.seed)
    labels = read_labels(data_dir)
    base = fresh_base(subject, Path(out) / f"base-{cfg.base}", cfg.base, cfg.seed, cfg.hidden, cfg.layers)
    return {"data_dir": data_dir, "labels": labels, "ids": list(labels), "base": base,
            "eval": clean_items(cfg.n_eval, EVAL_WORLD_SEED, cfg.seed + 7)}


def random_scores(ids: list[str], seed: int) -> dict[str, float]:
    return dict(zip(ids, np.random.default_rng(seed).random(len(ids)).tolist()))


def ifd_method(prep: dict, cfg: ExperimentConfig, out: Path) -> dict[str, float]:
    """IFD from a briefly warmed-up base (Cherry's 'brief experience' on a random share), Cherry's ranking."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from ..data import open_source
    from .ifd import ifd_scores, selection_scores
    from .run import run_finetune

    ids = prep["ids"]
    warm = top_ids(random_scores(ids, cfg.seed + 99), ids, cfg.warm_fraction)
    res = run_finetune(FinetuneConfig(
        data=write_subset(prep["data_dir"], "warm", warm), out=str(Path(out) / "ifd-warm"), model=str(prep["base"]),
        epochs=cfg.epochs, batch=cfg.batch, lr=cfg.lr, seed=cfg.seed, progress=False, resume=True, save_every=10**6))
    model = AutoModelForImageTextToText.from_pretrained(res["model_dir"])
    proc = AutoProcessor.from_pretrained(res["model_dir"])
    src = open_source(f"jsonl:{prep['data_dir'] / 'instruct.jsonl'}")
    ifd, _ = ifd_scores(model, proc, [src.record(i) for i in range(len(src))])
    return selection_scores(ifd)


def arm_steps(cfg: ExperimentConfig, n_all: int, n_kept: int, budget: str) -> int:
    full = max(1, math.ceil(cfg.epochs * n_all / cfg.batch))
    return full if budget == "steps" else max(1, math.ceil(cfg.epochs * n_kept / cfg.batch))


def run_arm(prep: dict, cfg: ExperimentConfig, out: Path, name: str, ids: list[str], steps: int, seed: int) -> dict:
    """Fine-tune the base on `ids` for `steps` and evaluate it (cached: a rerun skips finished arms)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .evaluate import vqa_accuracy
    from .run import run_finetune

    run_dir = Path(out) / "runs" / f"{name}-s{seed}"
    done = run_dir / "eval.json"
    if done.exists():
        return json.loads(done.read_text())
    res = run_finetune(FinetuneConfig(
        data=write_subset(prep["data_dir"], name, ids), out=str(run_dir / "ft"), model=str(prep["base"]),
        steps=steps, batch=cfg.batch, lr=cfg.lr, seed=seed, progress=False, resume=True, save_every=10**6))
    model = AutoModelForImageTextToText.from_pretrained(res["model_dir"])
    result = {"arm": name, "seed": seed, "steps": steps, "records": len(ids), "trained_records": res["records"],
              **vqa_accuracy(model, AutoProcessor.from_pretrained(res["model_dir"]), prep["eval"])}
    write_json(done, result)
    return result


def run_experiment(out: Path, cfg: ExperimentConfig, subject: str | Path, scores: dict[str, dict[str, float]]) -> dict:
    """Every arm x seed; returns rows plus AUROCs. `scores` maps method -> {record id: score, higher = keep}."""
    out = Path(out)
    prep = prepare(out, cfg, subject)
    ids, labels = prep["ids"], prep["labels"]
    clean = [k for k in ids if labels[k]["corruption"] is None]
    arms: list[tuple[str, str, float, list[str], str]] = [("all", "all", 1.0, ids, "steps"),
                                                           ("clean", "clean", len(clean) / len(ids), clean, "epochs")]
    for method, sc in scores.items():
        for keep in cfg.keeps:
            chosen = top_ids(sc, ids, keep)
            for budget in cfg.budgets:
                arms.append((f"{method}-{keep:g}-{budget}", method, keep, chosen, budget))
    rows = []
    for name, method, keep, chosen, budget in arms:
        steps = arm_steps(cfg, len(ids), len(chosen), budget)
        for seed in cfg.seeds:
            r = run_arm(prep, cfg, out, name, chosen, steps, seed)
            rows.append({**r, "selection": method, "keep": keep, "budget": budget,
                         "corrupted_kept": sum(labels[k]["corruption"] is not None for k in chosen) / len(chosen)})
    result = {"rows": rows, "auroc": {m: auroc(sc, labels) for m, sc in scores.items()},
              "records": len(ids), "corrupted": len(ids) - len(clean)}
    write_json(out / "results.json", result)
    return result


def summarise(rows: list[dict]) -> dict[tuple[str, float, str], tuple[float, float, int]]:
    """(selection, keep, budget) -> (mean accuracy, sd over seeds, seeds)."""
    groups: dict[tuple[str, float, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["selection"], r["keep"], r["budget"]), []).append(r["accuracy"])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)) for k, v in groups.items()}


def plot(rows: list[dict], path: Path) -> Path:
    """Accuracy vs kept fraction per method (one panel per budget), all-data and clean-only as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summarise(rows)
    budgets = sorted({b for (_, _, b) in summ if b in ("steps", "epochs")} | {"steps"})
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.6), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        methods = sorted({m for (m, _, b) in summ if b == budget and m not in ("all", "clean")})
        for m in methods:
            pts = sorted((k, v) for (mm, k, b), v in summ.items() if mm == m and b == budget)
            ax.errorbar([k for k, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], marker="o",
                        capsize=3, label=m)
        for ref, style in (("all", "k--"), ("clean", "g:")):
            v = next((v for (m, _, _), v in summ.items() if m == ref), None)
            if v:
                ax.axhline(v[0], color=style[0], linestyle=style[1:], label=f"{ref} data")
        ax.set(title=f"equal {budget}", xlabel="kept fraction", ylabel="held-out VQA accuracy")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
