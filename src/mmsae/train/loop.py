"""The training loop: one object, one step function, full-state checkpoints."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from mmsae.sae import SAE, default_lr
from mmsae.sae.config import SAEConfig
from mmsae.sae.kernels import bf16_is_fast
from mmsae.sae.quantized import int8_speedup
from mmsae.sae.io_utils import atomic_file
from mmsae.train.config import ARCH_FIELDS, TrainConfig
from mmsae.train.data import ActivationSource, batch_tensor, with_source_defaults
from mmsae.train.dist import DistContext, init_distributed
from mmsae.train.plots import plot_history
from mmsae.train.state import DeadLatentTracker, load_checkpoint, lr_lambda, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """The data cannot train this SAE (wrong width, too many non-finite batches, mismatched resume)."""


def choose_selection(choice: str | None, sae: SAE, device: torch.device) -> dict[str, Any]:
    """The dtype of a TopK kind's selection product, and why: {"dtype", "reason"[, "int8_speedup"]}.

    auto: bfloat16 where the device multiplies it natively; else, on a CPU, int8 where a startup
    probe finds its product at least 1.3x float32's (the margin pays for the certificate's extra
    exact dot products); else float32. Low precision only where the kind refines the selection
    (exact values decide, so the latents stay float32's)."""
    choice = choice or "float32"
    refines = getattr(sae, "refines_low_precision_selection", False)
    if choice == "int8":
        if device.type != "cpu":
            raise ValueError(f"selection_dtype int8 runs on CPU only, got device {device}")
        if not refines:
            raise ValueError(f"selection_dtype int8 needs the topk kind's certified selection, got kind {sae.cfg.kind!r}")
    if choice != "auto":
        return {"dtype": choice, "reason": "configured"}
    if not refines:
        return {"dtype": "float32", "reason": f"kind {sae.cfg.kind!r} selects from the product as it is"}
    if bf16_is_fast(device):
        return {"dtype": "bfloat16", "reason": f"native bf16 products on {device.type}"}
    if device.type != "cpu":
        return {"dtype": "float32", "reason": f"no native bf16 on {device}"}
    speedup = int8_speedup(sae.cfg.d_in, sae.cfg.n_latents, torch.get_num_threads())
    dtype = "int8" if speedup >= _INT8_MIN_SPEEDUP else "float32"
    return {"dtype": dtype, "reason": f"no native bf16; int8 product {speedup:.2f}x float32's "
                                      f"({'>=' if dtype == 'int8' else '<'} {_INT8_MIN_SPEEDUP})",
            "int8_speedup": speedup}


_INT8_MIN_SPEEDUP = 1.3


class Trainer:
    """Train an SAE on a resumable activation source and write `out_dir/{checkpoint.pt, sae/, metrics.jsonl, curves.png}`.

    If `out_dir/checkpoint.pt` exists the run resumes from it (model, Adam, schedule, RNG, dead-latent
    clock, data position), so a killed run restarted with the same command ends with the same weights.
    """

    def __init__(self, cfg: TrainConfig, data: ActivationSource, out_dir: str | Path, dist_ctx: DistContext | None = None):
        self.cfg = with_source_defaults(cfg, data, out_dir)  # a store's norm scale and layer, an online model's
        self.data = data
        self.out_dir = Path(out_dir)
        self.dist = dist_ctx or init_distributed(cfg.device)
        self.device = torch.device(cfg.device)
        self.sae: SAE | None = None
        self.step = 0
        self.tokens = 0
        self.bad_batches = 0
        self.norm_scale = 1.0
        self.history: list[dict[str, Any]] = []

    # -- setup ------------------------------------------------------------------------------------
    def _build(self, sae_cfg: SAEConfig, resumed: dict[str, Any] | None = None) -> None:
        torch.manual_seed(self.cfg.seed)
        self.sae = SAE.from_config(sae_cfg).to(self.device).train()
        self.selection = None
        if hasattr(self.sae, "selection_dtype"):
            if resumed is not None and self.cfg.selection_dtype == "auto":
                # the killed run's choice, not a new probe's (which could land on the other side of
                # the threshold): a resumed run computes what the uninterrupted one would have
                why = resumed["reason"] if resumed["reason"].startswith("resumed") else f"resumed; {resumed['reason']}"
                self.selection = {**resumed, "reason": why}
            else:
                # every rank takes rank 0's choice: replicas must run the same arithmetic
                self.selection = self.dist.gather_objects(choose_selection(self.cfg.selection_dtype, self.sae,
                                                                           self.device))[0]
            self.sae.selection_dtype = getattr(torch, self.selection["dtype"])
            log.info("selection product in %s (%s)", self.selection["dtype"], self.selection["reason"])
        self.params = [p for p in self.sae.parameters() if p.requires_grad]
        lr = self.cfg.lr if self.cfg.lr is not None else default_lr(sae_cfg.n_latents)
        # the fused Adam: one pass over each parameter instead of ~6 (GPU and, since torch 2.4, CPU)
        self.opt = torch.optim.Adam(self.params, lr=lr, betas=self.cfg.betas, eps=self.cfg.eps, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(self.cfg.steps, self.cfg.warmup_steps, self.cfg.decay_fraction)
        )
        self.tracker = DeadLatentTracker(sae_cfg.n_latents, self.cfg.dead_tokens, self.device)

    def _initialise(self, acts_BD: torch.Tensor) -> None:
        """First finite batch: width check, norm scale, b_dec = geometric median (pooled over ranks)."""
        self._build(self.cfg.sae_config(int(acts_BD.shape[1])))
        x = acts_BD.to(self.device, torch.float32)
        if self.cfg.normalize:
            if self.cfg.norm_scale is not None:
                self.norm_scale = float(self.cfg.norm_scale)
            else:
                norm_sum = self.dist.all_sum(x.norm(dim=1).double().sum())
                count = self.dist.all_sum(torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device))
                self.norm_scale = math.sqrt(x.shape[1]) / float(norm_sum / count)
        self.sae.init_b_dec(x * self.norm_scale, reduce_gather=self.dist.all_gather_cat if self.dist.active else None)
        self.dist.broadcast_module(self.sae)

    # -- one step ---------------------------------------------------------------------------------
    def _finite(self, acts_BD: torch.Tensor) -> bool:
        bad = torch.tensor(0.0 if bool(torch.isfinite(acts_BD).all()) else 1.0, device=self.device)
        return float(self.dist.all_sum(bad)) == 0.0  # every rank skips together

    def _train_step(self, acts_BD: torch.Tensor) -> dict[str, float]:
        sae = self.sae
        x = acts_BD.to(self.device, torch.float32)
        if self.norm_scale != 1.0:
            x = x * self.norm_scale
        dead_F = self.tracker.dead_mask() if sae.cfg.auxk_alpha > 0 else None
        use_bf16 = self.cfg.autocast and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = sae(x, dead_mask_F=dead_F, reduce=self.dist.all_sum)
        # Numerators are local and denominators global, so the ranks' mean gradient (below) is
        # the gradient of the one-process loss; hence the factor world_size here.
        self.opt.zero_grad(set_to_none=True)
        (out.loss * self.dist.world_size).backward()
        self.dist.average_gradients(self.params)
        if sae.unit_norm_decoder:
            sae.remove_gradient_parallel_to_decoder_directions()
        if self.cfg.grad_clip and self.device.type == "cpu":
            # clip_grad_norm_'s arithmetic, but no pass over the gradients when the factor is 1
            # (it multiplies unconditionally so as not to synchronise a GPU; a CPU has nothing to wait for)
            grads = [p.grad for p in self.params if p.grad is not None]
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            coef = self.cfg.grad_clip / (total + 1e-6)
            if not float(coef) >= 1.0:  # NaN included, as clip_grad_norm_ would multiply by it
                torch._foreach_mul_(grads, coef)
        elif self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        sae.after_optimizer_step()
        if self.dist.active and sae.cfg.kind == "batchtopk":  # each rank saw its own batch
            sae.threshold.copy_(self.dist.all_sum(sae.threshold) / self.dist.world_size)
        n_global = int(self.dist.all_sum(torch.tensor(float(x.shape[0]), device=self.device)))
        codes = out.codes
        self.tracker.update(self.dist.all_sum(codes.fired_F()), n_global)
        self.tokens += n_global
        stats = torch.stack([out.loss.detach().float(), out.fvu.float(), codes.active_B().sum().float()])
        stats = self.dist.all_sum(stats)
        return {"loss": float(stats[0]), "fvu": float(stats[1]), "l0": float(stats[2]) / n_global}

    # -- loop -------------------------------------------------------------------------------------
    def fit(self) -> SAE:
        ckpt = load_checkpoint(self.out_dir)
        if ckpt is not None:
            self._restore(ckpt)
        batches = iter(self.data)
        while self.step < self.cfg.steps:
            try:
                acts_BD = self._local(batch_tensor(next(batches)))
            except StopIteration:
                log.warning("data ran out after %d of %d steps; finishing early", self.step, self.cfg.steps)
                break
            if self.sae is not None and acts_BD.shape[1] != self.sae.cfg.d_in:
                raise TrainingError(f"batch width {acts_BD.shape[1]} does not match the SAE's d_in {self.sae.cfg.d_in}")
            if not self._finite(acts_BD):
                self._skip_bad_batch()
                continue
            if self.sae is None:
                self._initialise(acts_BD)
            metrics = self._train_step(acts_BD)
            self.step += 1
            if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                self._record(metrics)
            if self.step % self.cfg.checkpoint_every == 0 and self.step < self.cfg.steps:
                self.save_checkpoint()
        if self.sae is None:
            raise TrainingError("no finite batch to train on")
        self.save_checkpoint()
        return self._finish()

    def _local(self, acts_BD: torch.Tensor) -> torch.Tensor:
        if acts_BD.ndim != 2:
            raise TrainingError(f"expected [B, D] activation batches, got shape {tuple(acts_BD.shape)}")
        if self.dist.active and not getattr(self.data, "rank_aware", False):
            return acts_BD[self.dist.rank :: self.dist.world_size]
        return acts_BD

    def _skip_bad_batch(self) -> None:
        self.bad_batches += 1
        log.warning("skipped a batch with NaN/Inf activations (%d so far, limit %d)", self.bad_batches, self.cfg.max_bad_batches)
        if self.bad_batches > self.cfg.max_bad_batches:
            raise TrainingError(
                f"{self.bad_batches} batches held NaN/Inf activations (limit {self.cfg.max_bad_batches}); "
                f"aborting at step {self.step}. The last checkpoint in {self.out_dir} is intact."
            )

    def _record(self, metrics: dict[str, float]) -> None:
        row = {"step": self.step, "tokens": self.tokens, "lr": self.sched.get_last_lr()[0],
               "dead_fraction": self.tracker.dead_fraction(), "bad_batches": self.bad_batches, **metrics}
        self.history.append(row)
        if self.dist.is_main:
            log.info("step %(step)d tokens %(tokens)d loss %(loss).4g fvu %(fvu).4f l0 %(l0).1f dead %(dead_fraction).3f", row)

    # -- persistence --------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        data_states = self.dist.gather_objects(self.data.state_dict())
        if not self.dist.is_main:
            self.dist.barrier()
            return
        save_checkpoint(self.out_dir, {
            "train_config": self.cfg.to_dict(), "sae_config": self.sae.cfg.to_dict(),
            "sae": self.sae.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "tracker": self.tracker.state_dict(), "rng": rng_state(), "data": data_states,
            "step": self.step, "tokens": self.tokens, "bad_batches": self.bad_batches,
            "norm_scale": self.norm_scale, "history": self.history, "world_size": self.dist.world_size,
            "selection": self.selection, "int8_margin": getattr(self.sae, "int8_margin", None),
        })
        self.dist.barrier()

    def _restore(self, ckpt: dict[str, Any]) -> None:
        saved = ckpt["train_config"]
        diffs = {f: (saved.get(f), getattr(self.cfg, f)) for f in ARCH_FIELDS if saved.get(f) != getattr(self.cfg, f)}
        if diffs:
            raise TrainingError(f"{self.out_dir} holds a checkpoint of a different run {diffs}; use another --out")
        if ckpt["world_size"] != self.dist.world_size:
            raise TrainingError(f"checkpoint was written by {ckpt['world_size']} ranks, this run has {self.dist.world_size}")
        self._build(SAEConfig.from_dict(ckpt["sae_config"]), resumed=ckpt.get("selection"))
        self.sae.load_state_dict(ckpt["sae"])
        if ckpt.get("int8_margin") is not None:  # int8's widened margin: the same candidates as before the kill
            self.sae.int8_margin = ckpt["int8_margin"]
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        self.tracker.load_state_dict(ckpt["tracker"])
        set_rng_state(ckpt["rng"])
        self.data.load_state_dict(ckpt["data"][self.dist.rank])
        self.step, self.tokens, self.bad_batches = ckpt["step"], ckpt["tokens"], ckpt["bad_batches"]
        self.norm_scale, self.history = ckpt["norm_scale"], ckpt["history"]
        log.info("resumed from step %d (%d tokens)", self.step, self.tokens)

    def _finish(self) -> SAE:
        """Save the SAE with the normalisation folded in, the metrics and the curves."""
        final = self.sae.folded(self.norm_scale) if self.cfg.normalize else self.sae
        final.eval()
        if self.dist.is_main:
            final.save_pretrained(self.out_dir / "sae")
            with atomic_file(self.out_dir / "metrics.jsonl") as tmp:
                tmp.write_text("".join(json.dumps(h) + "\n" for h in self.history))
            if self.history and self.cfg.plots:
                plot_history(self.history, self.out_dir / "curves.png")
        self.dist.barrier()
        return final


def train(cfg: TrainConfig, data: ActivationSource, out_dir: str | Path) -> SAE:
    """Train (or resume) and return the folded SAE; see `Trainer`."""
    trainer = Trainer(cfg, data, out_dir)
    try:
        return trainer.fit()
    finally:
        trainer.dist.close()
