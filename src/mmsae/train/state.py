"""Training state that is not the model: schedule, dead-latent clock, RNG, atomic checkpoints."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmsae.sae.io_utils import atomic_file

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1


def lr_lambda(steps: int, warmup_steps: int, decay_fraction: float):
    """Linear warm-up, constant, then linear decay to 0 over the last `decay_fraction` of steps."""
    warmup = max(0, min(warmup_steps, steps - 1))
    decay_start = int(steps * (1 - decay_fraction))

    def factor(step: int) -> float:
        f = 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup)
        if decay_fraction > 0 and step >= decay_start:
            f *= max(0.0, (steps - step) / max(1, steps - decay_start))
        return f

    return factor


class DeadLatentTracker:
    """Tokens since each latent last fired; dead = silent for at least `threshold` tokens."""

    def __init__(self, n_latents: int, threshold: int, device: torch.device | str = "cpu"):
        self.threshold = int(threshold)
        self.tokens_since_fired_F = torch.zeros(n_latents, dtype=torch.int64, device=device)

    def update(self, fired_F: Tensor, n_tokens: int) -> None:
        self.tokens_since_fired_F += n_tokens
        self.tokens_since_fired_F[fired_F > 0] = 0

    def dead_mask(self) -> Tensor:
        return self.tokens_since_fired_F >= self.threshold

    def dead_fraction(self) -> float:
        return float(self.dead_mask().float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "tokens_since_fired_F": self.tokens_since_fired_F.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.threshold = int(state["threshold"])
        self.tokens_since_fired_F.copy_(state["tokens_since_fired_F"])


def rng_state() -> dict[str, Any]:
    out = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: Path, payload: dict[str, Any]) -> Path:
    path = Path(out_dir) / CHECKPOINT
    payload = {"version": CHECKPOINT_VERSION, **payload}
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    # Our own file, holding RNG states and numpy arrays: not loadable with weights_only.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {payload.get('version')} is not {CHECKPOINT_VERSION}")
    return payload
