"""BatchTopK SAE (Bussmann et al. 2024): the top B·k pre-activations over the whole batch survive.

At inference a single learned threshold replaces the batch selection (as SAELens saves it, as a
JumpReLU with one shared threshold), so a token's code no longer depends on its batch mates.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmsae.sae.base import Reduce, SAEOutput, no_reduce, register
from mmsae.sae.codes import Codes
from mmsae.sae.kernels import dense_preactivation, select_values
from mmsae.sae.topk import TopKSAE

_THRESHOLD_EMA = 0.01  # SAELens' topk_threshold_lr


@register("batchtopk")
class BatchTopKSAE(TopKSAE):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros((), dtype=self.W_enc.dtype))

    def _select(self, x_BD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pre_BF = dense_preactivation(x_BD, self.W_enc, self.b_enc, self.selection_dtype)
        relu_BF = torch.relu(pre_BF)
        B = pre_BF.shape[0]
        n_keep = min(B * int(self.cfg.k), relu_BF.numel())
        cutoff = relu_BF.flatten().kthvalue(relu_BF.numel() - n_keep + 1).values
        keep_BF = (relu_BF >= cutoff) & (relu_BF > 0)
        # Rows keep different counts; pad every row to the largest count with zero values, which
        # the sparse decoder treats as inactive.
        width = max(1, int(keep_BF.sum(1).max()))
        idx_BK = relu_BF.masked_fill(~keep_BF, -1.0).topk(width, dim=1, sorted=False).indices
        mask_BK = keep_BF.gather(1, idx_BK)
        values_BK = torch.relu(select_values(x_BD, self.W_enc, self.b_enc, idx_BK, pre_BF)) * mask_BK
        if self.training:
            self._update_threshold(values_BK.detach())
        return pre_BF, values_BK, idx_BK

    @torch.no_grad()
    def _update_threshold(self, values_BK: Tensor) -> None:
        positive = values_BK[values_BK > 0]
        if positive.numel():
            low = positive.min().to(self.threshold.dtype)
            if float(self.threshold) == 0.0:
                self.threshold.copy_(low)
            else:
                self.threshold.mul_(1 - _THRESHOLD_EMA).add_(_THRESHOLD_EMA * low)

    def encode(self, x_BD: Tensor) -> Codes:
        if self.training:
            return super().encode(x_BD)
        pre_BF = torch.nn.functional.linear(self.sae_input(x_BD), self.W_enc, self.b_enc)
        return Codes(torch.relu(pre_BF) * (pre_BF > self.threshold), None, self.cfg.n_latents)

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        if self.training:
            return super().forward(x_BD, dead_mask_F, reduce)
        reduce = reduce or no_reduce
        x_BD = x_BD.to(self.W_enc.dtype)
        codes = self.encode(x_BD)
        xhat_BD = self.decode(codes)
        recon, fvu = self._fvu(x_BD, xhat_BD, reduce)
        zero = recon.new_zeros(())
        return SAEOutput(xhat_BD, codes, recon, zero, zero, fvu)
