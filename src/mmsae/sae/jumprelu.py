"""JumpReLU SAE (Rajamanoharan et al. 2024): z = pre · H(pre − θ), trained with straight-through
pseudo-derivatives for θ and an L0 penalty (DeepMind's variant: the STE reaches θ only)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmsae.sae.base import SAE, Reduce, SAEOutput, no_reduce, register
from mmsae.sae.codes import Codes


def _rectangle(u: Tensor) -> Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_BF * (pre_BF > threshold_F)

    @staticmethod
    def backward(ctx, grad_BF: Tensor):
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre_BF > threshold_F) * grad_BF
        grad_thr = (-(threshold_F / eps) * _rectangle((pre_BF - threshold_F) / eps) * grad_BF).sum(0)
        return grad_pre, grad_thr, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre_BF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_BF > threshold_F).to(pre_BF.dtype)

    @staticmethod
    def backward(ctx, grad_BF: Tensor):
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_thr = (-(1.0 / eps) * _rectangle((pre_BF - threshold_F) / eps) * grad_BF).sum(0)
        return None, grad_thr, None


@register("jumprelu")
class JumpReLUSAE(SAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        init = math.log(max(cfg.jumprelu_init_threshold, 1e-12))
        self.log_threshold = nn.Parameter(torch.full((cfg.n_latents,), init, dtype=self.W_enc.dtype))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def _pre(self, x_BD: Tensor) -> Tensor:
        return F.linear(self.sae_input(x_BD), self.W_enc, self.b_enc)

    def encode(self, x_BD: Tensor) -> Codes:
        pre_BF = self._pre(x_BD)
        # relu guards against a negative threshold loaded from elsewhere.
        values_BF = _JumpReLU.apply(torch.relu(pre_BF), self.threshold, self.cfg.jumprelu_bandwidth)
        return Codes(values_BF, None, self.cfg.n_latents)

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        reduce = reduce or no_reduce
        x_BD = x_BD.to(self.W_enc.dtype)
        pre_BF = self._pre(x_BD)
        threshold_F = self.threshold
        values_BF = _JumpReLU.apply(torch.relu(pre_BF), threshold_F, self.cfg.jumprelu_bandwidth)
        codes = Codes(values_BF, None, self.cfg.n_latents)
        xhat_BD = self.decode(codes)
        n = reduce(torch.tensor(float(x_BD.shape[0]), dtype=x_BD.dtype, device=x_BD.device))
        recon = (xhat_BD - x_BD).pow(2).sum() / n
        l0 = _Step.apply(pre_BF, threshold_F, self.cfg.jumprelu_bandwidth).sum() / n
        _, fvu = self._fvu(x_BD, xhat_BD, reduce)
        sparsity = float(self.cfg.l1_coefficient or 0.0) * l0
        return SAEOutput(xhat_BD, codes, recon, recon.new_zeros(()), sparsity, fvu)
