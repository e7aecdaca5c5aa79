"""The interface every SAE kind shares, and the parts they have in common."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from mmsae.sae.codes import Codes
from mmsae.sae.config import SAEConfig, SAEConfigError
from mmsae.sae.kernels import sparse_decode
from mmsae.util import ShapeError, check_shape

# Sums a tensor over data-parallel ranks; the identity in one process.
Reduce = Callable[[Tensor], Tensor]


def no_reduce(t: Tensor) -> Tensor:
    return t


@dataclass
class SAEOutput:
    """What `forward` returns. `loss` is already weighted: recon + aux_weight·aux + sparsity."""

    xhat_BD: Tensor
    codes: Codes
    recon_loss: Tensor
    aux_loss: Tensor
    sparsity_loss: Tensor
    fvu: Tensor
    aux_weight: float = 0.0

    @property
    def loss(self) -> Tensor:
        return self.recon_loss + self.aux_weight * self.aux_loss + self.sparsity_loss


_REGISTRY: dict[str, type[SAE]] = {}


def _checked_encode(fn):
    """encode with its input checked: x_BD is [B, D=d_in] (a clear error, not a matmul's, names both shapes)."""

    @functools.wraps(fn)
    def encode(self, x_BD: Float[Tensor, "B D"], *args, **kwargs) -> Codes:
        d_in = self.cfg.d_in
        if x_BD.ndim != 2 or x_BD.shape[1] != d_in:
            if x_BD.ndim >= 1 and x_BD.shape[-1] != d_in:
                raise SAEConfigError(f"input width {x_BD.shape[-1]} does not match the SAE's d_in {d_in}: x_BD "
                                     f"must have shape [B, D={d_in}], got {list(x_BD.shape)}")
            check_shape("x_BD", x_BD, "B D", D=d_in)
        return fn(self, x_BD, *args, **kwargs)

    encode._shape_checked = True
    return encode


def _checked_decode(fn):
    """decode with its codes checked: values [B, K] with indices [B, K], or dense values [B, F=n_latents]."""

    @functools.wraps(fn)
    def decode(self, codes: Codes, *args, **kwargs) -> Float[Tensor, "B D"]:
        n = self.cfg.n_latents
        if codes.n_latents != n:
            raise ShapeError(f"codes have n_latents {codes.n_latents}, the SAE has {n}")
        if codes.indices is not None:
            check_shape("codes.values", codes.values, "B K")
            check_shape("codes.indices", codes.indices, "B K", B=codes.values.shape[0], K=codes.values.shape[1])
        else:
            check_shape("codes.values", codes.values, "B F", F=n)
        return fn(self, codes, *args, **kwargs)

    decode._shape_checked = True
    return decode


def register(kind: str):
    def wrap(cls: type[SAE]) -> type[SAE]:
        cls.kind = kind
        _REGISTRY[kind] = cls
        return cls

    return wrap


class SAE(nn.Module):
    """Weights: W_enc [F, D], b_enc [F], W_dec [F, D], b_dec [D] (rows are latents, as in sparsify).

    Subclasses implement `encode` and `forward`; decoding, the decoder-norm constraint, folding and
    I/O are shared. Build one with `SAE.from_config(cfg)` or `SAE.from_pretrained(path)`.
    """

    kind: ClassVar[str] = ""
    # Kinds whose decoder rows are held at unit norm during training (TopK family).
    unit_norm_decoder: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # every kind's encode/decode checks shapes at the public boundary, whatever the kind implements
        for name, check in (("encode", _checked_encode), ("decode", _checked_decode)):
            own = cls.__dict__.get(name)
            if own is not None and not getattr(own, "_shape_checked", False):
                setattr(cls, name, check(own))

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if cfg.kind != self.kind:
            raise SAEConfigError(f"{type(self).__name__} cannot be built from a {cfg.kind!r} config")
        self.cfg = cfg
        F_, D = cfg.n_latents, cfg.d_in
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.empty(F_, D, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(F_, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(F_, D, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(D, dtype=dtype))
        self.reset_parameters()

    # -- construction -------------------------------------------------------------------------
    @staticmethod
    def from_config(cfg: SAEConfig) -> SAE:
        import mmsae.sae  # noqa: F401  (registers every kind)

        if cfg.kind not in _REGISTRY:
            raise SAEConfigError(f"no SAE kind {cfg.kind!r} is registered")
        return _REGISTRY[cfg.kind](cfg)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """OpenAI's and sparsify's init: W_enc ~ U(±1/√d) (nn.Linear's), W_dec = W_encᵀ with unit rows.

        The encoder keeps its smaller norm (≈ 1/√3 per row): a unit-norm encoder overshoots the
        pre-activations and trains measurably slower (FVU 0.535 vs 0.487 after 300 steps, 3 seeds, in our test).
        """
        bound = 1.0 / math.sqrt(self.cfg.d_in)
        W = (torch.rand(self.W_enc.shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        self.W_enc.copy_(W)
        self.W_dec.copy_(W / W.norm(dim=1, keepdim=True))
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def init_b_dec(self, acts_BD: Tensor, reduce_gather: Callable[[Tensor], Tensor] | None = None) -> None:
        """b_dec ← geometric median of a first batch (gathered over ranks when `reduce_gather` is set)."""
        pts = acts_BD if reduce_gather is None else reduce_gather(acts_BD)
        self.b_dec.copy_(geometric_median(pts.to(torch.float64)).to(self.b_dec.dtype))

    # -- the interface --------------------------------------------------------------------------
    def sae_input(self, x_BD: Tensor) -> Tensor:
        x_BD = x_BD.to(self.W_enc.dtype)
        self.check_width(x_BD)
        return x_BD - self.b_dec if self.cfg.apply_b_dec_to_input else x_BD

    def check_width(self, x_BD: Tensor) -> None:
        if self.cfg.d_in != x_BD.shape[-1]:
            raise SAEConfigError(f"input width {x_BD.shape[-1]} does not match the SAE's d_in {self.cfg.d_in}")

    def encode(self, x_BD: Tensor) -> Codes:
        raise NotImplementedError

    @_checked_decode
    def decode(self, codes: Codes) -> Tensor:
        if codes.indices is not None:
            return sparse_decode(codes.values, codes.indices, self.W_dec) + self.b_dec
        return codes.values.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        raise NotImplementedError

    # -- helpers for losses -----------------------------------------------------------------------
    @classmethod
    def _fvu(cls, x_BD: Tensor, xhat_BD: Tensor, reduce: Reduce) -> tuple[Tensor, Tensor]:
        """(local squared error / pooled centred variance, the same detached). Centring uses the
        mean over every rank's rows so that data parallelism reproduces one-process numbers."""
        variance = cls._pooled_centred_sum_sq(x_BD.detach(), reduce)
        # mse_loss: one fused kernel each way, where (xhat − x)²'s autograd takes three
        sse = torch.nn.functional.mse_loss(xhat_BD, x_BD, reduction="sum")
        fvu = sse / variance.to(sse.dtype)
        return fvu, fvu.detach()

    @staticmethod
    def _pooled_centred_sum_sq(t_BD: Tensor, reduce: Reduce) -> Tensor:
        """Σ_b ‖t_b − mean‖² over every rank's rows, in float64, clamped away from 0.

        As Σ‖t‖² − n‖mean‖²: two sums over one float64 copy instead of centring it first (float64
        keeps the cancellation harmless unless ‖mean‖² exceeds the variance ~10⁸-fold)."""
        t64 = t_BD.to(torch.float64)
        n = reduce(torch.tensor(float(t_BD.shape[0]), dtype=torch.float64, device=t_BD.device))
        mean_D = reduce(t64.sum(0)) / n
        t_flat = t64.reshape(-1)
        sum_sq = reduce(torch.dot(t_flat, t_flat))
        return (sum_sq - n * torch.dot(mean_D, mean_D)).clamp_min(1e-12)

    # -- training constraints ----------------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        """Project each row's gradient onto the row's tangent space, so the step cannot grow the norm."""
        if self.W_dec.grad is None:
            return
        grad_FD, W_FD = self.W_dec.grad, self.W_dec
        # on CPU in row blocks of ~1 MB: the product's temporary stays in cache and off the
        # page-fault path; on GPUs one launch
        step = max(1, (1 << 18) // max(1, W_FD.shape[1])) if W_FD.device.type == "cpu" else max(1, W_FD.shape[0])
        for lo in range(0, W_FD.shape[0], step):
            g, w = grad_FD[lo : lo + step], W_FD[lo : lo + step]
            g.addcmul_(torch.linalg.vecdot(g, w, dim=1).unsqueeze(1), w, value=-1)

    def after_optimizer_step(self) -> None:
        if self.unit_norm_decoder:
            self.set_decoder_norm_to_unit_norm()

    # -- normalisation --------------------------------------------------------------------------
    @torch.no_grad()
    def folded(self, norm_scale: float) -> SAE:
        """A copy acting on raw activations x of this SAE trained on s·x (s = `norm_scale`).

        pre(s·x) = W_enc(s·x − b_dec) + b_enc = (s·W_enc)(x − b_dec/s) + b_enc, and x̂ = (W_dec z + b_dec)/s:
        codes are unchanged, so thresholds and k stay valid.
        """
        cfg = replace(self.cfg, norm_scale=float(norm_scale) * self.cfg.norm_scale, folded=True, extra=dict(self.cfg.extra))
        out = SAE.from_config(cfg)
        out.load_state_dict(self.state_dict())
        out.W_enc.mul_(norm_scale)
        out.W_dec.div_(norm_scale)
        out.b_dec.div_(norm_scale)
        return out

    # -- I/O (implemented in mmsae.sae.formats) ---------------------------------------------------
    @staticmethod
    def from_pretrained(path: str | Path, hookpoint: str | None = None, device: str | torch.device = "cpu") -> SAE:
        from mmsae.sae.formats import load_any

        return load_any(Path(path), hookpoint=hookpoint).to(device)

    def save_pretrained(self, path: str | Path) -> Path:
        from mmsae.sae.formats import save_mmsae

        return save_mmsae(self, Path(path))

    def export_saelens(self, path: str | Path) -> Path:
        from mmsae.sae.formats import save_saelens

        return save_saelens(self, Path(path))

    def export_sparsify(self, path: str | Path) -> Path:
        from mmsae.sae.formats import save_sparsify

        return save_sparsify(self, Path(path))


@torch.no_grad()
def geometric_median(points_ND: Tensor, max_iter: int = 100, tol: float = 1e-7) -> Tensor:
    """Weiszfeld's algorithm; starts at the mean and stops when the point moves < tol·scale."""
    median_D = points_ND.mean(0)
    scale = points_ND.norm(dim=1).mean().clamp_min(1e-12)
    for _ in range(max_iter):
        dist_N = (points_ND - median_D).norm(dim=1).clamp_min(1e-12 * float(scale))
        w_N = 1.0 / dist_N
        new_D = (w_N[:, None] * points_ND).sum(0) / w_N.sum()
        moved = (new_D - median_D).norm()
        median_D = new_D
        if moved < tol * scale:
            break
    return median_D


def default_lr(n_latents: int) -> float:
    """OpenAI's scaling: 2e-4 at 2^14 latents, ∝ 1/√F."""
    return 2e-4 / math.sqrt(n_latents / 2**14)

