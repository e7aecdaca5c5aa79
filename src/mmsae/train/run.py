"""`mmsae train`: a TrainConfig plus where the activations come from, as one config (the CLI is generated from it)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmsae.train.config import TrainConfig
from mmsae.train.data import open_source
from mmsae.train.dist import init_distributed
from mmsae.train.loop import Trainer

SELECT = ("all", "image", "text")


@dataclass(kw_only=True)
class TrainJob(TrainConfig):
    """Train an SAE on harvested activations (--store) or harvesting on the fly (--online); under torchrun it
    trains data-parallel. Rerun the same command to resume a killed run."""

    out: str
    """Output folder: checkpoint.pt, sae/, metrics.jsonl, curves.png, config.json."""
    store: str | None = None
    """Activation store folder, or a .safetensors/.pt file of [N, D] activations."""
    batch_size: int = 4096
    """Tokens per step (global, over all ranks)."""
    tokens: int | None = None
    """Training tokens; when given, steps = tokens / batch_size."""
    online: bool = False
    """Harvest on the fly instead of reading --store (nothing written to disk)."""
    data: str = "world:n=1000,seed=0"
    """Online: data spec, as for `mmsae harvest`."""
    layer: int | None = None
    """Online: decoder block L, 0-indexed."""
    prompt: str | None = None
    """Online: prompt template with <image> and {text}."""
    select: str = "all"
    """Online: tokens that train the SAE: all | image | text."""
    window_tokens: int = 65_536
    """Online: tokens per shuffle window (held in memory)."""
    capture_batch_size: int = 8
    """Online: records per forward pass of the model."""
    max_seq_len: int | None = None
    """Online: reject longer sequences."""
    model_dtype: str | None = None
    """Online: load the model in this dtype (e.g. bfloat16)."""

    def __post_init__(self) -> None:
        if self.tokens is not None:
            if self.tokens < self.batch_size:
                raise ValueError(f"tokens must be >= batch_size {self.batch_size}, got {self.tokens}")
            self.steps = self.tokens // self.batch_size
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.online == (self.store is not None):
            raise ValueError("give either --store or --online (with --layer, --data, --model)")
        if self.online and self.layer is None:
            raise ValueError("--online needs --layer")
        if self.select not in SELECT:
            raise ValueError(f"select: tokens must be one of {SELECT}, got {self.select!r}")

    def train_config(self) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return TrainConfig(**{n: getattr(self, n) for n in names})


def run_train(job: TrainJob) -> dict[str, Any]:
    """Open the source, train, save; returns a summary (the SAE's folder, size, steps and last metrics)."""
    from mmsae.io import write_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ctx = init_distributed(job.device)
    if ctx.world_size > 1 and job.batch_size % ctx.world_size:
        raise ValueError(f"batch_size {job.batch_size} is not divisible by {ctx.world_size} ranks")
    out = Path(job.out)
    if job.online:
        from mmsae.defaults import default_model
        from mmsae.train.online import open_online

        source = open_online(job.model or default_model(), job.data, job.layer, job.batch_size, prompt=job.prompt,
                             model_dtype=job.model_dtype, seed=job.seed, tokens=job.select,
                             window_tokens=job.window_tokens, capture_batch_size=job.capture_batch_size,
                             max_seq_len=job.max_seq_len, device="cuda" if job.device.startswith("cuda") else "cpu")
    else:
        store = Path(job.store)
        local_batch = job.batch_size // ctx.world_size if store.is_dir() else job.batch_size
        source = open_source(store, local_batch, seed=job.seed, rank=ctx.rank, world_size=ctx.world_size)
    trainer = Trainer(job.train_config(), source, out, dist_ctx=ctx)
    try:
        sae = trainer.fit()
    finally:
        ctx.close()
    if not ctx.is_main:
        return {}
    resolved = {k: getattr(trainer.cfg, k) for k in ("norm_scale", "hook_layer", "model")}
    if trainer.selection is not None:  # "auto" resolved: the dtype this run's selection product ran in
        resolved["selection_dtype"] = trainer.selection["dtype"]
    write_config(out, dataclasses.replace(job, **resolved))
    last = trainer.history[-1] if trainer.history else {}
    return {"sae": str(out / "sae"), "kind": sae.cfg.kind, "n_latents": sae.cfg.n_latents, "steps": trainer.step,
            "tokens": trainer.tokens, "selection": trainer.selection,
            **{k: last.get(k) for k in ("fvu", "l0", "dead_fraction")}}
