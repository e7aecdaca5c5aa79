"""ReLU SAE with an L1 penalty weighted by decoder norms (SAE-V; SAELens 'standard')."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmsae.sae.base import SAE, Reduce, SAEOutput, no_reduce, register
from mmsae.sae.codes import Codes


@register("relu")
class ReLUSAE(SAE):
    """z = ReLU(W_enc(x − b_dec) + b_enc). Loss = mean_b ‖x − x̂‖² + λ · mean_b Σ_f z_f ‖W_dec_f‖.

    Weighting the L1 by decoder norms stops the optimiser from shrinking codes while growing
    decoder rows, so the decoder needs no unit-norm constraint.
    """

    def encode(self, x_BD: Tensor) -> Codes:
        pre_BF = F.linear(self.sae_input(x_BD), self.W_enc, self.b_enc)
        return Codes(torch.relu(pre_BF), None, self.cfg.n_latents)

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        reduce = reduce or no_reduce
        x_BD = x_BD.to(self.W_enc.dtype)
        codes = self.encode(x_BD)
        xhat_BD = self.decode(codes)
        n = reduce(torch.tensor(float(x_BD.shape[0]), dtype=x_BD.dtype, device=x_BD.device))
        recon = (xhat_BD - x_BD).pow(2).sum() / n
        l1 = (codes.values * self.W_dec.norm(dim=1)).sum() / n
        _, fvu = self._fvu(x_BD, xhat_BD, reduce)
        sparsity = float(self.cfg.l1_coefficient or 0.0) * l1
        return SAEOutput(xhat_BD, codes, recon, recon.new_zeros(()), sparsity, fvu)
