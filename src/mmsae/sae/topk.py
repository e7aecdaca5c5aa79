"""TopK SAE (Gao et al. 2024; Multimodal-SAE): z = TopK(ReLU(W_enc(x − b_dec) + b_enc)), with AuxK."""

from __future__ import annotations

import torch
from torch import Tensor

from mmsae.sae.base import SAE, Reduce, SAEOutput, no_reduce, register
from mmsae.sae.codes import Codes
from mmsae.sae.kernels import dense_preactivation, select_values, sparse_decode


@register("topk")
class TopKSAE(SAE):
    unit_norm_decoder = True
    # dtype of the dense selection product (None: the weights'); bfloat16 picks the same latents
    # up to near-ties at several times the speed, and the k values are still computed exactly.
    selection_dtype: torch.dtype | None = None

    def _select(self, x_BD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(pre_BF without autograd, values_BK with a sparse backward, idx_BK)."""
        pre_BF = dense_preactivation(x_BD, self.W_enc, self.b_enc, self.selection_dtype)
        # top-k then ReLU equals ReLU then top-k (ReLU is monotone) and saves a [B, F] pass.
        idx_BK = pre_BF.topk(self.cfg.k, dim=1, sorted=False).indices
        values_BK = torch.relu(select_values(x_BD, self.W_enc, self.b_enc, idx_BK, pre_BF))
        return pre_BF, values_BK, idx_BK

    def encode(self, x_BD: Tensor) -> Codes:
        _, values_BK, idx_BK = self._select(self.sae_input(x_BD))
        return Codes(values_BK, idx_BK, self.cfg.n_latents)

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        reduce = reduce or no_reduce
        x_BD = x_BD.to(self.W_enc.dtype)
        sae_in_BD = self.sae_input(x_BD)
        pre_BF, values_BK, idx_BK = self._select(sae_in_BD)
        codes = Codes(values_BK, idx_BK, self.cfg.n_latents)
        xhat_BD = self.decode(codes)
        recon, fvu = self._fvu(x_BD, xhat_BD, reduce)
        aux = self._auxk_loss(sae_in_BD, x_BD, xhat_BD, pre_BF, dead_mask_F, reduce)
        zero = recon.new_zeros(())
        return SAEOutput(xhat_BD, codes, recon, aux, zero, fvu, aux_weight=self.auxk_alpha)

    @property
    def auxk_alpha(self) -> float:
        return float(self.cfg.auxk_alpha)

    def _auxk_loss(
        self, sae_in_BD: Tensor, x_BD: Tensor, xhat_BD: Tensor, pre_BF: Tensor, dead_mask_F: Tensor | None, reduce: Reduce
    ) -> Tensor:
        """Reconstruct the residual from the top-k_aux dead latents (OpenAI's AuxK).

        Normalised by the residual's pooled centred variance (OpenAI divides by the residual's
        energy, sparsify by the input's variance: ours keeps the term O(1) as the residual
        shrinks) and scaled down while fewer than k_aux latents are dead, as sparsify does.
        """
        if dead_mask_F is None or self.auxk_alpha == 0:
            return x_BD.new_zeros(())
        n_dead = int(dead_mask_F.sum())
        if n_dead == 0:
            return x_BD.new_zeros(())
        k_aux = min(self.cfg.resolved_k_aux, n_dead)
        masked_BF = pre_BF.masked_fill(~dead_mask_F.to(pre_BF.device), float("-inf"))
        idx_BA = masked_BF.topk(k_aux, dim=1, sorted=False).indices
        values_BA = torch.relu(select_values(sae_in_BD, self.W_enc, self.b_enc, idx_BA, pre_BF))
        ehat_BD = sparse_decode(values_BA, idx_BA, self.W_dec)
        e_BD = (x_BD - xhat_BD).detach()
        e64 = e_BD.to(torch.float64)
        n = reduce(torch.tensor(float(e_BD.shape[0]), dtype=torch.float64, device=e_BD.device))
        mean_D = reduce(e64.sum(0)) / n
        variance = reduce(((e64 - mean_D) ** 2).sum()).clamp_min(1e-12)
        scale = min(n_dead / self.cfg.resolved_k_aux, 1.0)
        return scale * (ehat_BD - e_BD).pow(2).sum() / variance.to(e_BD.dtype)
