"""Typed training configuration (the SAE's own config lives in mmsae.sae.SAEConfig)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmsae.sae.config import SAEConfig

# Fields that must match between a checkpoint and the run resuming it.
ARCH_FIELDS = ("kind", "n_latents", "k", "l1_coefficient", "seed")
SELECTION_DTYPES = ("auto", "bfloat16", "float32", None)


@dataclass
class TrainConfig:
    kind: str = "topk"
    n_latents: int | None = None
    expansion: int = 16  # n_latents = expansion · d_in when n_latents is None
    k: int | None = 32
    l1_coefficient: float | None = None
    auxk_alpha: float = 1 / 32
    k_aux: int | None = None
    dead_tokens: int = 10_000_000  # a latent silent for this many tokens counts as dead
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001

    steps: int = 1000  # optimizer steps
    lr: float | None = None  # None: 2e-4 / √(F / 2^14)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 6.25e-10  # OpenAI's; Adam's 1e-8 is large next to normalised gradients
    warmup_steps: int = 100
    decay_fraction: float = 0.2  # linear decay to 0 over the last fraction of the steps
    grad_clip: float | None = 1.0

    normalize: bool = True  # train on s·x with E‖s·x‖ = √d; s is folded into the saved weights
    norm_scale: float | None = None  # known s (e.g. from a store manifest); else estimated from batch 1
    max_bad_batches: int = 10  # non-finite batches skipped before the run aborts

    checkpoint_every: int = 500
    log_every: int = 10
    plots: bool = True  # curves.png at the end (imports matplotlib)
    seed: int = 0
    device: str = "cpu"
    autocast: bool = True  # bf16 autocast, on CUDA only
    # TopK kinds: dtype of the dense [B, F] product that only *selects* the k latents; the k values
    # and every gradient stay in float32 either way. "bfloat16" runs it on AMX / AVX512-BF16 /
    # tensor cores (~2x faster than float32 on such CPUs; near-ties may pick another latent);
    # "float32" (or None) is exact; "auto" is bfloat16 where the device multiplies it natively and
    # the kind lets exact values settle bf16's near-ties (TopK), else float32.
    selection_dtype: str | None = "auto"

    hook_layer: int | None = None
    hook_name: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"steps must be > 0, got {self.steps}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        self.betas = tuple(self.betas)  # JSON round trips make it a list
        if self.selection_dtype not in SELECTION_DTYPES:
            raise ValueError(f"selection_dtype must be one of {SELECTION_DTYPES}, got {self.selection_dtype!r}")

    def sae_config(self, d_in: int) -> SAEConfig:
        """Raises SAEConfigError for impossible settings (e.g. k ≥ n_latents) before any work."""
        return SAEConfig(
            kind=self.kind,
            d_in=d_in,
            n_latents=self.n_latents or self.expansion * d_in,
            k=self.k if self.kind in ("topk", "batchtopk") else None,
            l1_coefficient=self.l1_coefficient,
            k_aux=self.k_aux,
            auxk_alpha=self.auxk_alpha,
            jumprelu_bandwidth=self.jumprelu_bandwidth,
            jumprelu_init_threshold=self.jumprelu_init_threshold,
            hook_layer=self.hook_layer,
            hook_name=self.hook_name,
            model=self.model,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**data)
