"""`mmsae finetune`: supervised fine-tuning of an AutoModelForImageTextToText checkpoint on chat records.

Resumable after kill -9: every `save_every` steps the trainable weights, the optimizer and the log are
written atomically to out/.resume/state.pt. The data order of micro-batch g is a pure function of (seed, g)
and dropout is reseeded per step, so a resumed run continues to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..data import Reject, open_source
from ..defaults import default_model
from ..io import CONFIG_FILE, atomic_dir, write_atomic, write_config, write_json
from ..util import pick_device
from .chat import Item, answer_loss_sum, collate, encode, world_template
from .config import FinetuneConfig
from .loop import cosine_lr, train_loop

STATE = ".resume/state.pt"
VISION = ("vision_tower", "visual", "vision_model", "vqmodel")


def _check_out(cfg: FinetuneConfig, out: Path) -> dict | None:
    """Refuse an --out holding another run; returns a finished run's summary when resuming it."""
    if not out.exists() or not any(out.iterdir()):
        return None
    if cfg.overwrite:
        shutil.rmtree(out)
        return None
    if not cfg.resume:
        raise ValueError(f"out {out} already holds a run; pass resume to continue it or overwrite to replace it")
    old_path = out / CONFIG_FILE
    if not old_path.exists():
        raise ValueError(f"out {out} holds files but no {CONFIG_FILE}: not a finetune run; pick another out")
    old, new = json.loads(old_path.read_text()), {"config": type(cfg).__name__, **asdict(cfg)}
    diff = sorted(k for k in set(old) | set(new) if k not in FinetuneConfig.RUNTIME and old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"cannot resume the run in {out}: its config differs in {', '.join(diff)}")
    summary = out / "summary.json"
    return json.loads(summary.read_text()) if summary.exists() else None


def load_items(cfg: FinetuneConfig, processor, template: str | None, max_length: int,
               expand=None) -> tuple[list[Item], list[dict]]:
    """Every record encoded, or a reject (id, reason); bad records never stop the rest."""
    src = open_source(cfg.data)
    n = len(src) if not cfg.limit else min(cfg.limit, len(src))
    items, rejects = [], []
    for i in range(n):
        try:
            items.append(encode(src.record(i), processor, template, max_length, expand))
        except Reject as r:
            rejects.append({"record": i, "id": r.id, "reason": r.reason})
    return items, rejects


def micro_batches(n_items: int, batch: int, seed: int, g: int) -> np.ndarray:
    """Record indices of micro-batch g: positions [g*batch, (g+1)*batch) of one seeded permutation per epoch."""
    pos = np.arange(g * batch, (g + 1) * batch)
    epochs = pos // n_items
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, int(e)]).permutation(n_items)
        out[epochs == e] = perm[pos[epochs == e] % n_items]
    return out


def _trainable(model, cfg: FinetuneConfig):
    """The model to train (LoRA-wrapped or not) and its trainable parameters, by name."""
    torch.manual_seed(cfg.seed)  # LoRA's initialisation
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        targets = "|".join(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=rf".*language_model.*\.({targets})")
        model = get_peft_model(model, lora)
    else:
        for name, p in model.named_parameters():
            if not cfg.train_vision and any(f"{v}." in name for v in VISION):
                p.requires_grad_(False)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not named:
        raise ValueError(f"no trainable parameters (lora_targets {cfg.lora_targets!r} matched nothing?)")
    return model, named


def _save_state(path: Path, step: int, named: dict, opt, log: list) -> None:
    buf = io.BytesIO()
    torch.save({"step": step, "trainable": {n: p.detach().cpu() for n, p in named.items()},
                "opt": opt.state_dict(), "log": log}, buf)
    write_atomic(path, buf.getvalue())


def _save_model(model, processor, out: Path, cfg: FinetuneConfig) -> dict:
    paths = {}
    if cfg.lora_r:
        with atomic_dir(out / "adapter") as d:
            model.save_pretrained(d)
        paths["adapter_dir"] = str(out / "adapter")
        if not cfg.merge_lora:
            return paths
        model = model.merge_and_unload()
    with atomic_dir(out / "model") as d:
        model.save_pretrained(d)
        processor.save_pretrained(d)
    paths["model_dir"] = str(out / "model")
    return paths


def _load(path: str, world: bool):
    """Model, processor and (for the world template) the family's placeholder expansion, through the
    mmsae.models adapter when the family has one (its loaders know the family's quirks), else the Auto classes."""
    from ..models import AdapterError, load_adapter

    try:
        adapter = load_adapter(path)
    except AdapterError:
        if world:
            raise ValueError(f"chat_template='world' needs a model family mmsae.models knows; {path} is not one")
        from transformers import AutoModelForImageTextToText, AutoProcessor

        return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path), None
    return adapter.model, adapter.processor, (adapter.expand_text if world else None)


def run_finetune(cfg: FinetuneConfig) -> dict:
    out = Path(cfg.out)
    done = _check_out(cfg, out)
    if done is not None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    model_path = cfg.model or default_model()
    model, processor, expand = _load(model_path, cfg.chat_template == "world")
    if cfg.chat_template == "model" and not getattr(processor, "chat_template", None):
        raise ValueError(f"model {model_path} has no chat template; pass chat_template='world'")
    template = world_template() if cfg.chat_template == "world" else None
    text_cfg = model.config.get_text_config()
    max_length = cfg.max_length or int(getattr(text_cfg, "max_position_embeddings", 0) or 1 << 30)
    items, rejects = load_items(cfg, processor, template, max_length, expand)
    write_atomic(out / "rejects.jsonl", "".join(json.dumps(r) + "\n" for r in rejects))
    if not items:
        raise ValueError(f"no usable records in {cfg.data} ({len(rejects)} rejected; see {out / 'rejects.jsonl'})")
    per_step = cfg.batch * cfg.grad_accum
    steps = cfg.steps or max(1, math.ceil(cfg.epochs * len(items) / per_step))

    device = pick_device(cfg.device)
    model.to(device)
    model, named = _trainable(model, cfg)
    model.train()
    params = list(named.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, log = 0, []
    state_path = out / STATE
    if cfg.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        with torch.no_grad():
            for n, t in state["trainable"].items():
                named[n].copy_(t)
        opt.load_state_dict(state["opt"])
        start, log = int(state["step"]), state["log"]
    pad_id = processor.tokenizer.pad_token_id
    pad_id = processor.tokenizer.eos_token_id if pad_id is None else pad_id
    tokens_of = {}

    def micro_loss(step: int, micro: int):
        if micro == 0:
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout etc.: a function of the step alone
            groups = [micro_batches(len(items), cfg.batch, cfg.seed, step * cfg.grad_accum + m)
                      for m in range(cfg.grad_accum)]
            tokens_of["groups"] = groups
            tokens_of["n"] = sum(len(items[i].answer) for g in groups for i in g)
            tokens_of["sum"] = 0.0
        inputs, labels = collate([items[i] for i in tokens_of["groups"][micro]], pad_id)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        loss_sum, _ = answer_loss_sum(model, inputs, labels.to(device))
        tokens_of["sum"] = tokens_of["sum"] + loss_sum.detach()
        return loss_sum / tokens_of["n"], lambda: {"loss": float(tokens_of["sum"]) / tokens_of["n"]}

    def after_step(n: int) -> None:
        if n % cfg.save_every == 0 or n == steps:
            _save_state(state_path, n, named, opt, log)

    train_loop(params, opt, steps, micro_loss, lr_at=lambda s: cosine_lr(s, steps, cfg.warmup, cfg.lr), accum=cfg.grad_accum, clip=cfg.max_grad_norm or None,
               start=start, label="finetune", log=log, log_every=max(1, min(20, steps // 10)),
               after_step=after_step, progress=cfg.progress)
    model.eval()
    paths = _save_model(model, processor, out, cfg)
    summary = {"out": str(out), **paths, "steps": steps, "resumed_from": start, "records": len(items),
               "rejects": len(rejects), "epochs": steps * per_step / len(items),
               "final_loss": log[-1]["loss"] if log else None, "log": log}
    write_json(out / "summary.json", summary)
    return summary
