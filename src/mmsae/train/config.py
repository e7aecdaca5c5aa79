"""Typed training configuration (the SAE's own config lives in mmsae.sae.SAEConfig)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmsae.sae.config import SAEConfig

# Fields that must match between a checkpoint and the run resuming it.
ARCH_FIELDS = ("kind", "n_latents", "k", "l1_coefficient", "seed")
SELECTION_DTYPES = ("auto", "bfloat16", "float32", "int8", None)


@dataclass
class TrainConfig:
    """How to train one SAE (the CLI's `mmsae train` adds where the activations come from: `train.run.TrainJob`)."""

    kind: str = "topk"
    """SAE kind: topk | batchtopk | relu | jumprelu."""
    n_latents: int | None = None
    """Number of latents (default: expansion · d_in)."""
    expansion: int = 16
    """Latents per input dimension when n_latents is not given."""
    k: int | None = 32
    """Active latents per token (topk, batchtopk)."""
    l1_coefficient: float | None = None
    """L1 coefficient (relu; default 5 as SAE-V) or L0 coefficient (jumprelu)."""
    auxk_alpha: float = 1 / 32
    """AuxK loss weight for TopK kinds (0 disables)."""
    k_aux: int | None = None
    """Latents in the AuxK reconstruction (default d_in / 2)."""
    dead_tokens: int = 10_000_000
    """Tokens without firing after which a latent counts as dead."""
    jumprelu_bandwidth: float = 0.001
    """JumpReLU straight-through bandwidth."""
    jumprelu_init_threshold: float = 0.001
    """JumpReLU initial threshold."""

    steps: int = 1000
    """Optimizer steps."""
    lr: float | None = None
    """Peak learning rate (default 2e-4 / sqrt(n_latents / 2^14))."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    eps: float = 6.25e-10
    """Adam epsilon (OpenAI's; Adam's 1e-8 is large next to normalised gradients)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    decay_fraction: float = 0.2
    """Fraction of the steps at the end with linear decay to 0."""
    grad_clip: float | None = 1.0
    """Gradient-norm clip (none disables)."""

    normalize: bool = True
    """Train on s·x with E‖s·x‖ = √d; s is folded into the saved weights."""
    norm_scale: float | None = None
    """Known s; default: the source's (a store's manifest, an online source's first window), else batch 1's."""
    max_bad_batches: int = 10
    """Non-finite batches skipped before the run aborts."""

    checkpoint_every: int = 500
    """Steps between checkpoints (a killed run resumes from the last one)."""
    log_every: int = 10
    """Steps between metric records (metrics.jsonl)."""
    plots: bool = True
    """Write curves.png at the end."""
    seed: int = 0
    """Seed of the initialisation and of the data order."""
    device: str = "cpu"
    """cpu or cuda."""
    autocast: bool = True
    """bf16 autocast, on CUDA only."""
    selection_dtype: str | None = "auto"
    """TopK kinds: dtype of the dense [B, F] product that only selects the k latents (values and gradients stay
    float32): bfloat16 (fast on AMX / AVX512-BF16 / tensor cores; near-ties may pick another latent), int8 (CPU,
    topk kind: float32's latents, certified by an error bound), float32 (exact), auto (bfloat16 where the device
    multiplies it natively, else int8 where a startup probe finds it faster on this CPU, else float32; the run's
    config.json records the choice)."""

    hook_layer: int | None = None
    """Layer the activations come from (default: the source's)."""
    hook_name: str | None = None
    """Hook point name recorded in the SAE (SAELens / sparsify interop)."""
    model: str | None = None
    """Model the activations come from (default: the source's)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata saved with the SAE."""

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
