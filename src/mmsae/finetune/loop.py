"""The one optimisation loop for LMM training: the zoo's stages and `mmsae finetune` both run it.

A caller gives `micro_loss(step, micro) -> (loss, metrics)`: the loss of one micro-batch, already scaled to
its share of the step (so gradient accumulation adds up to the full-batch gradient); `metrics` is a dict or
a callable returning one, evaluated only on logged steps (so logging costs nothing in between). The loop
owns what is the same for everybody: learning-rate schedule, accumulation, gradient clipping, the progress
bar, the training log, and a hook after each step (where `finetune` writes its resumable state).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..util import progress_bar

Metrics = dict[str, float] | Callable[[], dict[str, float]]


def cosine_lr(step: int, total: int, warmup: int, peak: float, floor: float = 0.05) -> float:
    """Linear warm-up to `peak`, then a cosine down to `floor * peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _show(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def train_loop(
    params: list[torch.nn.Parameter],
    opt: torch.optim.Optimizer,
    steps: int,
    micro_loss: Callable[[int, int], tuple[torch.Tensor, Metrics]],
    *,
    lr_at: Callable[[int], float],
    accum: int = 1,
    clip: float | None = 1.0,
    start: int = 0,
    label: str = "train",
    log: list[dict[str, Any]] | None = None,
    log_every: int = 20,
    after_step: Callable[[int], None] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run optimizer steps [start, steps); returns the log (one row per `log_every` steps: step + metrics).

    `after_step(n)` is called once n steps are done (n = step + 1), after the optimizer has stepped."""
    log = [] if log is None else log
    with progress_bar(label, "info", enabled=progress) as bar:
        task = bar.add_task(label, total=steps, completed=start, info="")
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            opt.zero_grad(set_to_none=True)
            metrics: Metrics = {}
            for micro in range(accum):
                loss, metrics = micro_loss(step, micro)
                loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            if step % log_every == 0:
                row = metrics() if callable(metrics) else metrics
                log.append({"step": step, **{k: float(v) for k, v in row.items()}})
                bar.update(task, info=_show(row))
                if step % (10 * log_every) == 0 and progress and not bar.console.is_terminal:
                    bar.console.log(f"{label} step {step}: {_show(row)}")  # bars need a TTY
            bar.advance(task)
            if after_step is not None:
                after_step(step + 1)
    return log
