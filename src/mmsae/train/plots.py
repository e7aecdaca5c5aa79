"""Training curves as PNG: loss, FVU, L0 and dead fraction against tokens seen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmsae.sae.io_utils import atomic_file

PANELS = (("loss", "loss"), ("fvu", "FVU"), ("l0", "L0 (active latents / token)"), ("dead_fraction", "dead fraction"))


def plot_history(history: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2), constrained_layout=True)
    tokens = [h["tokens"] for h in history]
    for ax, (key, label) in zip(axes, PANELS):
        ax.plot(tokens, [h[key] for h in history], lw=1.2)
        ax.set_xlabel("tokens")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key in ("loss", "fvu") and all(h[key] > 0 for h in history):
            ax.set_yscale("log")
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
