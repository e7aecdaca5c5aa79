"""`mmsae train`: a thin shell over mmsae.train (registered by mmsae.cli)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Optional

import typer

from mmsae.train.config import TrainConfig
from mmsae.train.data import StoreBatches, open_source
from mmsae.train.dist import init_distributed
from mmsae.train.loop import Trainer


def train_command(
    store: Optional[Path] = typer.Option(None, "--store", help="Activation store folder, or a .safetensors/.pt file of [N, D] activations."),
    out: Path = typer.Option(..., "--out", help="Output folder: checkpoint.pt, sae/, metrics.jsonl, curves.png. Rerun to resume."),
    kind: str = typer.Option("topk", help="topk | batchtopk | relu | jumprelu"),
    k: int = typer.Option(32, help="Active latents per token (topk, batchtopk)."),
    latents: Optional[int] = typer.Option(None, help="Number of latents (default: expansion · d_in)."),
    expansion: int = typer.Option(16, help="Latents per input dimension when --latents is not given."),
    l1: Optional[float] = typer.Option(None, help="L1 coefficient (relu; default 5 as SAE-V) or L0 coefficient (jumprelu)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (or give --tokens)."),
    tokens: Optional[int] = typer.Option(None, help="Training tokens; steps = tokens / batch size."),
    batch_size: int = typer.Option(4096, help="Tokens per step (global, over all ranks)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default 2e-4 / sqrt(latents / 2^14))."),
    warmup: int = typer.Option(1000, help="Linear warm-up steps."),
    decay_fraction: float = typer.Option(0.2, help="Fraction of steps at the end with linear decay to 0."),
    grad_clip: float = typer.Option(1.0, help="Gradient-norm clip (0 disables)."),
    auxk_alpha: float = typer.Option(1 / 32, help="AuxK weight for TopK kinds (0 disables)."),
    dead_tokens: int = typer.Option(10_000_000, help="Tokens without firing after which a latent counts as dead."),
    max_bad_batches: int = typer.Option(10, help="NaN/Inf batches skipped before aborting."),
    checkpoint_every: int = typer.Option(500, help="Steps between checkpoints."),
    log_every: int = typer.Option(50, help="Steps between metric records."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda (bf16 autocast is used on cuda)."),
    autocast: bool = typer.Option(True, help="bf16 autocast on CUDA."),
    normalize: bool = typer.Option(True, help="Scale inputs to E‖x‖ = √d while training (folded into the saved SAE)."),
    online: bool = typer.Option(False, "--online", help="Harvest on the fly instead of reading --store (nothing written to disk)."),
    model: Optional[str] = typer.Option(None, "--model", help="Online: model directory (default: the zoo subject)."),
    data: str = typer.Option("world:n=1000,seed=0", "--data", help="Online: data spec, as for `mmsae harvest`."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Online: prompt template with <image> and {text}."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Online: decoder block L, 0-indexed."),
    select: str = typer.Option("all", "--select", help="Online: tokens that train the SAE: all | image | text."),
    window_tokens: int = typer.Option(65_536, help="Online: tokens per shuffle window (held in memory)."),
    capture_batch_size: int = typer.Option(8, help="Online: records per forward pass of the model."),
    max_seq_len: Optional[int] = typer.Option(None, help="Online: reject longer sequences."),
    model_dtype: Optional[str] = typer.Option(None, help="Online: load the model in this dtype (e.g. bfloat16)."),
) -> None:
    """Train an SAE on harvested activations (--store) or harvesting on the fly (--online); under torchrun
    it trains data-parallel."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ctx = init_distributed(device)
    if ctx.world_size > 1 and batch_size % ctx.world_size:
        raise typer.BadParameter(f"--batch-size {batch_size} is not divisible by {ctx.world_size} ranks")
    if online == (store is not None):
        raise typer.BadParameter("give either --store or --online (with --layer, --data, --model)")
    if online:
        if layer is None:
            raise typer.BadParameter("--online needs --layer")
        from mmsae.train.online import open_online

        if model is None:
            from mmsae.store.harvest import default_model

            model = default_model()
        try:
            source = open_online(model, data, layer, batch_size, prompt=prompt, model_dtype=model_dtype, seed=seed,
                                 tokens=select, window_tokens=window_tokens, capture_batch_size=capture_batch_size,
                                 max_seq_len=max_seq_len, device="cuda" if device.startswith("cuda") else "cpu")
        except (ValueError, FileNotFoundError) as e:  # AdapterError is a ValueError
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
    else:
        local_batch = batch_size // ctx.world_size if store.is_dir() else batch_size
        source = open_source(store, local_batch, seed=seed, rank=ctx.rank, world_size=ctx.world_size)
    if steps is None:
        if tokens is None:
            raise typer.BadParameter("give --steps or --tokens")
        steps = max(1, tokens // batch_size)
    norm_scale = hook_layer = model_path = None
    if isinstance(source, StoreBatches):
        manifest = source.manifest
        if manifest.get("mean_norm"):
            norm_scale = math.sqrt(source.d_in) / float(manifest["mean_norm"])
        hook_layer = manifest.get("layer")
        model_path = (manifest.get("model") or {}).get("path")
    cfg = TrainConfig(
        kind=kind, n_latents=latents, expansion=expansion, k=k, l1_coefficient=l1, auxk_alpha=auxk_alpha,
        dead_tokens=dead_tokens, steps=steps, lr=lr, warmup_steps=warmup, decay_fraction=decay_fraction,
        grad_clip=grad_clip or None, normalize=normalize, norm_scale=norm_scale, max_bad_batches=max_bad_batches,
        checkpoint_every=checkpoint_every, log_every=log_every, seed=seed, device=device, autocast=autocast,
        hook_layer=hook_layer, model=model_path,
    )
    if online:  # layer, model and the norm scale (first window) from the online source
        from mmsae.train.online import prepare_online

        prepare_online(cfg, source, out)
    trainer = Trainer(cfg, source, out, dist_ctx=ctx)
    try:
        sae = trainer.fit()
    finally:
        ctx.close()
    if ctx.is_main:
        last = trainer.history[-1] if trainer.history else {}
        typer.echo(json.dumps({"sae": str(out / "sae"), "kind": sae.cfg.kind, "n_latents": sae.cfg.n_latents,
                               "steps": trainer.step, "tokens": trainer.tokens, **{k_: last.get(k_) for k_ in ("fvu", "l0", "dead_fraction")}}))
