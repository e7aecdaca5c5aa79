"""Typed SAE configuration: what a checkpoint's `config.json` holds."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

KINDS = ("topk", "batchtopk", "relu", "jumprelu")
FORMAT_NAME = "mmsae"
FORMAT_VERSION = 1


class SAEConfigError(ValueError):
    """A configuration that cannot describe a working SAE."""


@dataclass
class SAEConfig:
    """Everything needed to rebuild an SAE for inference, plus the loss terms `forward` reports.

    `norm_scale` records the factor s that training multiplied inputs by (so that E‖s·x‖ = √d).
    Saved weights always act on raw activations: s is folded in (`folded=True`), kept for provenance.
    """

    kind: str
    d_in: int
    n_latents: int
    k: int | None = None
    l1_coefficient: float | None = None
    k_aux: int | None = None
    auxk_alpha: float = 1 / 32
    apply_b_dec_to_input: bool = True
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    norm_scale: float = 1.0
    folded: bool = True
    hook_layer: int | None = None
    hook_name: str | None = None
    model: str | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise SAEConfigError(f"unknown SAE kind {self.kind!r}; expected one of {KINDS}")
        if self.d_in <= 0 or self.n_latents <= 0:
            raise SAEConfigError(f"d_in ({self.d_in}) and n_latents ({self.n_latents}) must be > 0")
        if self.kind in ("topk", "batchtopk"):
            if self.k is None or self.k <= 0:
                raise SAEConfigError(f"kind {self.kind!r} needs k > 0, got {self.k}")
            if self.k >= self.n_latents:
                raise SAEConfigError(
                    f"k = {self.k} must be smaller than n_latents = {self.n_latents}: "
                    "with k >= n_latents nothing is sparse"
                )
        if self.kind == "relu" and self.l1_coefficient is None:
            self.l1_coefficient = 5.0  # SAE-V's coefficient
        if self.kind == "jumprelu" and self.l1_coefficient is None:
            self.l1_coefficient = 1.0  # here it weighs the L0 penalty
        if self.k_aux is None:
            self.k_aux = max(1, self.d_in // 2)  # sparsify's and OpenAI's default

    @property
    def resolved_k_aux(self) -> int:
        return min(int(self.k_aux or 1), self.n_latents)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT_NAME
        out["format_version"] = FORMAT_VERSION
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAEConfig:
        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in data.items() if k in known}
        unknown = {k: v for k, v in data.items() if k not in known and k not in ("format", "format_version")}
        if unknown:
            args.setdefault("extra", {}).update(unknown)
        return cls(**args)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> SAEConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
