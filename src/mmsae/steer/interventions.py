"""What a steering run does to one SAE feature (or one plain direction), and on which tokens.

    Clamp(7, 20.0, tokens="image")     z_7 := 20 on the image tokens
    Add(7, 4.0)                        x += 4·d_7 (d_7 = the SAE's decoder row 7) on every steered token
    Scale(7, 0.0, tokens="text")       z_7 *= 0 (ablate the feature) on the text tokens
    AddVector(v_D, tokens="prompt")    x += v (a baseline direction, e.g. a difference of means)

`tokens` names a token set or is a bool mask [B, S] over the padded prompt columns:
  "image"      image tokens of the prompt
  "text"       text tokens of the prompt
  "prompt"     both (every non-special prompt token)
  "generated"  the tokens `generate` feeds back, one per decoding step (columns past the prompt)
  "all"        prompt and generated
Special tokens (BOS/EOS, chat markers, padding; a generated EOS or pad) are left alone unless the
steering run says `steer_special=True`, as the SAE never trained on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor

TOKEN_SETS = ("image", "text", "prompt", "generated", "all")
Tokens = Union[str, Tensor]


def check_tokens(tokens: Any) -> None:
    if isinstance(tokens, Tensor):
        if tokens.dtype != torch.bool or tokens.dim() != 2:
            raise ValueError(f"tokens as a mask must be a bool tensor [B, S], got {tokens.dtype} of shape {tuple(tokens.shape)}")
        return
    if tokens not in TOKEN_SETS:
        raise ValueError(f"tokens must be one of {', '.join(TOKEN_SETS)} or a bool mask [B, S], got {tokens!r}")


def _check_feature(feature: Any) -> None:
    if isinstance(feature, bool) or not isinstance(feature, int) or feature < 0:
        raise ValueError(f"feature must be an integer >= 0, got {feature!r}")


def _check_finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _tokens_dict(tokens: Tokens) -> Any:
    return tokens if isinstance(tokens, str) else {"mask": tokens.tolist()}


class _FeatureEdit:
    """What Clamp, Add and Scale share: one SAE feature, one finite number (the field named ARG), a token set.
    OP is the name `to_dict` gives the edit."""

    OP: ClassVar[str]
    ARG: ClassVar[str]
    feature: int
    tokens: Tokens

    def __post_init__(self):
        _check_feature(self.feature)
        _check_finite(self.ARG, getattr(self, self.ARG))
        check_tokens(self.tokens)

    def to_dict(self) -> dict:
        return {"op": self.OP, "feature": self.feature, self.ARG: float(getattr(self, self.ARG)),
                "tokens": _tokens_dict(self.tokens)}


# eq=False: `tokens` may be a tensor, whose == is elementwise; interventions compare by identity.
@dataclass(frozen=True, eq=False)
class Clamp(_FeatureEdit):
    """Set the feature's code to `value` (z_j := value)."""

    OP, ARG = "clamp", "value"
    feature: int
    value: float
    tokens: Tokens = "all"


@dataclass(frozen=True, eq=False)
class Add(_FeatureEdit):
    """Add `scale` times the feature's decoder direction (z_j += scale, so x += scale·d_j)."""

    OP, ARG = "add", "scale"
    feature: int
    scale: float
    tokens: Tokens = "all"


@dataclass(frozen=True, eq=False)
class Scale(_FeatureEdit):
    """Multiply the feature's code by `factor` (0 ablates it, 1 is a no-op)."""

    OP, ARG = "scale", "factor"
    feature: int
    factor: float
    tokens: Tokens = "all"


@dataclass(frozen=True, eq=False)
class AddVector:
    """Add a plain residual-stream vector [D] (a baseline: difference of means, a probe direction)."""

    vector: Tensor = field(repr=False)
    tokens: Tokens = "all"

    def __post_init__(self):
        if not isinstance(self.vector, Tensor) or self.vector.dim() != 1:
            shape = tuple(self.vector.shape) if isinstance(self.vector, Tensor) else type(self.vector).__name__
            raise ValueError(f"vector must be a 1-d tensor [D], got {shape}")
        if not bool(torch.isfinite(self.vector).all()):
            raise ValueError("vector must be finite, it has NaN or inf entries")
        check_tokens(self.tokens)

    @property
    def feature(self) -> None:
        return None

    def to_dict(self) -> dict:
        return {"op": "add_vector", "norm": float(self.vector.float().norm()), "tokens": _tokens_dict(self.tokens)}


Intervention = Union[Clamp, Add, Scale, AddVector]
KINDS = (Clamp, Add, Scale, AddVector)
