"""`mmsae attribute`: attribute one prompt's next-token score to the SAE's features, positions and patches.

Writes OUT (FILE.parquet: one row per active feature per position plus the error term of each position,
columns feature, position, modality, token, attribution, exact_effect), OUT's resolved config beside it
(FILE.config.json) and, with --heatmap, the image with the per-patch attribution painted on it; prints the
top features and the modality shares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

PARQUET_COLUMNS = ("feature", "position", "modality", "token", "attribution", "exact_effect")


@dataclass
class AttributeConfig:
    """Attribute a prompt's next-token score to SAE features, positions, modalities and image patches."""

    sae: str
    """SAE checkpoint directory (mmsae, SAELens or sparsify format)"""
    prompt: str
    """prompt text; '<image>' marks where the image goes (without one the image goes first)"""
    target: str
    """the output token whose score is attributed: a string that is exactly one token"""
    out: str
    """Parquet file for the rows (feature -1 rows are the error term at each position)"""
    model: str | None = None
    """model directory (None: the zoo subject)"""
    layer: int | None = None
    """decoder block whose output the SAE reads (0-indexed; None: the SAE config's hook_layer)"""
    image: str | None = None
    """image file for the prompt (None: a text-only prompt)"""
    baseline: str | None = None
    """the token d is compared with: d = logit(target) - logit(baseline)"""
    metric: Literal["logit_diff", "logprob"] | None = None
    """logit_diff (needs a baseline) or logprob (log p(target)); None: logit_diff with a baseline, else logprob"""
    position: int | None = None
    """position whose logits are read (0 = the first token, -1 = the last; None: the last)"""
    exact_top: int = 0
    """also rerun the model with each of the top N features zeroed and record the exact effect"""
    ig_steps: int = 0
    """integrated gradients with this many steps (0: one gradient, the attribution-patching estimate)"""
    heatmap: str | None = None
    """PNG file for the image with each patch's summed |attribution| painted on it (needs an image)"""
    top: int = 10
    """features to print"""
    device: str = "auto"
    """auto: cuda when available, else cpu"""

    def __post_init__(self):
        if not str(self.out).endswith(".parquet"):
            raise ValueError(f"out must be a .parquet file, got {self.out!r}")
        if self.heatmap is not None and not str(self.heatmap).lower().endswith(".png"):
            raise ValueError(f"heatmap must be a .png file, got {self.heatmap!r}")
        if self.heatmap is not None and self.image is None:
            raise ValueError("heatmap needs an image: give --image")
        for name in ("exact_top", "ig_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.top < 1:
            raise ValueError(f"top must be >= 1, got {self.top!r}")
        if self.metric is None:
            self.metric = "logit_diff" if self.baseline is not None else "logprob"
        if self.metric not in ("logit_diff", "logprob"):
            raise ValueError(f"metric must be one of logit_diff, logprob, got {self.metric!r}")
        if self.metric == "logit_diff" and self.baseline is None:
            raise ValueError("metric logit_diff needs a baseline token: give --baseline, or use --metric logprob")


def _load(cfg: AttributeConfig):
    """(adapter, sae, layer, image or None), each checked."""
    from PIL import Image

    from mmsae.defaults import default_model
    from mmsae.models import load_adapter
    from mmsae.sae import SAE
    from mmsae.util import pick_device

    if not Path(cfg.sae).exists():
        raise FileNotFoundError(f"no SAE checkpoint at {cfg.sae}")
    image = None
    if cfg.image is not None:
        if not Path(cfg.image).is_file():
            raise FileNotFoundError(f"no image file at {cfg.image}")
        image = Image.open(cfg.image).convert("RGB")
    sae = SAE.from_pretrained(cfg.sae).eval()
    layer = cfg.layer if cfg.layer is not None else sae.cfg.hook_layer
    if layer is None:
        raise ValueError(f"layer is required: the SAE at {cfg.sae} records no hook_layer; give --layer")
    adapter = load_adapter(cfg.model or default_model(), device=pick_device(cfg.device))
    return adapter, sae.to(adapter.device), int(layer), image


def _print(console, attr, cfg: AttributeConfig, summary: dict) -> None:
    from rich.table import Table

    what = f"logit({cfg.target}) - logit({cfg.baseline})" if cfg.metric == "logit_diff" else f"log p({cfg.target})"
    console.print(f"d = {what} = {summary['value']:.4f} at position {summary['position']}, layer {summary['layer']}")
    table = Table(title=f"top {cfg.top} features by |attribution|")
    for col in ("feature", "attribution", "exact_effect", "positions"):
        table.add_column(col, justify="right")
    for row in summary["top"]:
        exact = "" if row["exact_effect"] is None else f"{row['exact_effect']:.4f}"
        table.add_row("error" if row["feature"] == -1 else str(row["feature"]), f"{row['attribution']:.4f}", exact,
                      str(row["n_positions"]))
    console.print(table)
    shares = "  ".join(f"{k} {v:.1%}" for k, v in summary["modality_share"].items())
    console.print(f"share of |attribution|: {shares}")


def run_attribute(cfg: AttributeConfig) -> dict:
    """Attribute, write the Parquet (and heatmap), print the top features; returns a summary."""
    import math

    import pyarrow.parquet as pq
    from rich.console import Console

    from mmsae.io import atomic_path, write_json
    from mmsae.models import Prompt

    from .core import attribute

    adapter, sae, layer, image = _load(cfg)
    encoded = adapter.encode([Prompt([image] if image is not None else [], cfg.prompt)])
    attr = attribute(adapter, sae, layer, encoded, cfg.target, cfg.baseline, metric=cfg.metric,
                     position=cfg.position, exact_top=cfg.exact_top, ig_steps=cfg.ig_steps)
    table = attr.table().select(list(PARQUET_COLUMNS))
    out = Path(cfg.out)
    with atomic_path(out) as tmp:
        pq.write_table(table, str(tmp))
    write_json(out.with_name(out.name[: -len(".parquet")] + ".config.json"), {"config": type(cfg).__name__, **asdict(cfg)})
    if cfg.heatmap is not None:
        picture = attr.heatmap(0, 0, image)
        with atomic_path(Path(cfg.heatmap)) as tmp:
            picture.save(tmp, format="PNG")
    per = attr.per_feature(0).slice(0, cfg.top).to_pylist()
    top = [{**r, "exact_effect": None if math.isnan(r["exact_effect"]) else r["exact_effect"]} for r in per]
    summary = {"metric": cfg.metric, "value": float(attr.metric[0]), "target": cfg.target, "baseline": cfg.baseline,
               "position": int(attr.read_position[0]), "layer": layer, "rows": table.num_rows, "top": top,
               "modality_share": attr.modality_share(0), "out": str(out), "heatmap": cfg.heatmap}
    _print(Console(stderr=True), attr, cfg, summary)
    return summary
