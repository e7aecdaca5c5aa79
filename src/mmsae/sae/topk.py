"""TopK SAE (Gao et al. 2024; Multimodal-SAE): z = TopK(ReLU(W_enc(x − b_dec) + b_enc)), with AuxK."""

from __future__ import annotations

import torch
from torch import Tensor

from mmsae.sae.base import SAE, Reduce, SAEOutput, no_reduce, register
from mmsae.sae.codes import Codes
from mmsae.sae.kernels import (
    GatherLinear,
    _gather_dot,
    dense_preactivation,
    encoder_input,
    encoder_with_bias_column,
    select_topk,
    select_values,
    sparse_decode,
    topk_candidates,
    topk_indices,
    with_bias_column,
)
from mmsae.sae.quantized import certified_topk, int8_preactivation


@register("topk")
class TopKSAE(SAE):
    unit_norm_decoder = True
    # dtype of the dense selection product (None: the weights'); bfloat16 picks the same latents
    # up to near-ties at several times the speed, and the k values are still computed exactly;
    # int8 (CPU) picks float32's latents with a certificate (`mmsae.sae.quantized`).
    selection_dtype: torch.dtype | None = None
    # int8: candidates beyond k, widened while many rows fall back to float32 (see _note_fallback)
    int8_margin: int | None = None
    # int8: rows selected and rows that fell back to a float32 product, over this SAE's life
    selection_stats: dict | None = None

    def _select(self, x_BD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(pre_BF without autograd, values_BK with a sparse backward, idx_BK) for an encoder input
        x_BD (b_dec already subtracted). Subclasses with another selection rule override this."""
        return self._select_shifted(x_BD, None)

    def _select_shifted(
        self, x_BD: Tensor, shift_D: Tensor | None, out: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`_select` of x_BD − shift_D, the shift's gradient formed sparsely (see GatherLinear)."""
        rows_BD = encoder_input(x_BD, shift_D, self.W_enc.dtype)  # x − shift, once for every use below
        if self.selection_dtype == torch.int8:
            return self._select_int8(x_BD, shift_D, rows_BD, out)
        pre_BF = dense_preactivation(rows_BD, self.W_enc, self.b_enc, self.selection_dtype, out=out)
        # top-k then ReLU equals ReLU then top-k (ReLU is monotone) and saves a [B, F] pass.
        idx_BK, pre_BK = select_topk(x_BD, self.W_enc, self.b_enc, pre_BF, self.cfg.k, shift_D, rows_BD)
        return pre_BF, torch.relu(pre_BK), idx_BK

    def _select_int8(
        self, x_BD: Tensor, shift_D: Tensor | None, rows_BD: Tensor, out: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = int(self.cfg.k)
        if self.int8_margin is None:
            # the bound is worst-case, a few times the largest actual error: at d_in 512, k 32 a fresh
            # SAE's rows certify 25 % of the time with margin 32, 99 % with 64, all with 128
            self.int8_margin = max(32, 2 * k)
        product = int8_preactivation(rows_BD, self.W_enc, self.b_enc, out=out)
        idx_BK, exact_BK, n_fallback = certified_topk(rows_BD, self.W_enc, self.b_enc, product, k, self.int8_margin)
        self._note_fallback(int(rows_BD.shape[0]), n_fallback)
        pre_BK = GatherLinear.apply(x_BD, shift_D, self.W_enc, self.b_enc, idx_BK, None, exact_BK, rows_BD)
        # the accumulator orders each row as the approximation does (AuxK only ranks dead latents by it)
        return product.acc_BF, torch.relu(pre_BK), idx_BK

    def _note_fallback(self, n_rows: int, n_fallback: int) -> None:
        """Each fallback row costs a float32 product of its own; past 1 in 16 rows a wider margin
        (more exact dot products per row, k + margin of them) is the cheaper trade."""
        stats = self.selection_stats = self.selection_stats or {"rows": 0, "fallback_rows": 0}
        stats["rows"] += n_rows
        stats["fallback_rows"] += n_fallback
        if n_fallback * 16 > n_rows:
            self.int8_margin = min(2 * self.int8_margin, self.cfg.n_latents)
        stats["margin"] = self.int8_margin

    def encode(self, x_BD: Tensor) -> Codes:
        _, values_BK, idx_BK = self._select(self.sae_input(x_BD))
        return Codes(values_BK, idx_BK, self.cfg.n_latents)

    @torch.no_grad()
    def encode_exact(self, x_BD: Tensor) -> Codes:
        """`encode` whose codes do not depend on `selection_dtype` (inference only): each row's k latents
        by (exact value descending, latent ascending), in ascending latent order, each value one float32
        dot product. `encode` reads float32's values off the dense product (which rounds them otherwise)
        and breaks exact ties as `topk` happens to. The selection product only narrows each row to
        k + margin candidates: int8's are certified to hold float32's top k (a row that fails gets every
        latent as a candidate); bfloat16's and float32's margin is `select_topk`'s, max(8, k/4)."""
        rows_BD = self.sae_input(x_BD).to(self.W_enc.dtype)
        W_FD, b_F = self.W_enc.detach(), self.b_enc.detach()
        k, F = int(self.cfg.k), self.cfg.n_latents
        product = None
        if self.selection_dtype == torch.int8:
            self.int8_margin = self.int8_margin or max(32, 2 * k)
            product = int8_preactivation(rows_BD, W_FD, b_F, out=self._inference_buffer(rows_BD, torch.int32))
            approx_BF = product.acc_BF  # orders each row as the approximation does
            n_cand = min(F, k + self.int8_margin)
        else:
            approx_BF = self._inference_product(rows_BD, self.selection_dtype or W_FD.dtype)
            n_cand = min(F, k + max(8, k // 4))
        cand_BM = topk_candidates(approx_BF, n_cand)
        idx_BK, exact_BK = _best_k(cand_BM, _gather_dot(cand_BM, W_FD, rows_BD) + b_F[cand_BM], k)
        if product is not None:
            floor_B = product.approx_at(cand_BM).amin(1)
            bad_R = (exact_BK.amin(1) < floor_B + product.err_B).nonzero().squeeze(1) if n_cand < F else cand_BM[:0, 0]
            if bad_R.numel():  # not certified: every latent is a candidate
                all_RF = torch.arange(F, device=rows_BD.device).expand(len(bad_R), F)
                rows_RD = rows_BD.index_select(0, bad_R)
                idx_BK[bad_R], exact_BK[bad_R] = _best_k(all_RF, _gather_dot(all_RF, W_FD, rows_RD) + b_F, k)
            self._note_fallback(int(rows_BD.shape[0]), int(bad_R.numel()))
        return Codes(torch.relu(exact_BK), idx_BK, F)

    def _inference_product(self, rows_BD: Tensor, dtype: torch.dtype) -> Tensor:
        """rows·W_encᵀ + b_enc in `dtype` for `encode_exact`, with the bias riding in the product (a
        column of ones against a column of b_enc: a separate add is another pass over [B, F], ~25 % of
        a bf16 product at d_in 128). The augmented encoder is rebuilt when the weights change."""
        W_FD, b_F = self.W_enc, self.b_enc
        key = (W_FD.data_ptr(), W_FD._version, b_F.data_ptr(), b_F._version, dtype, W_FD.device)
        cached = getattr(self, "_inference_encoder", None)
        if cached is None or cached[0] != key:
            cached = self._inference_encoder = (key, encoder_with_bias_column(W_FD, b_F, 1.0, dtype).T.contiguous())
        x_aug = with_bias_column(rows_BD, 1.0, dtype)
        return torch.mm(x_aug, cached[1], out=self._inference_buffer(rows_BD, dtype))

    def _inference_buffer(self, rows_BD: Tensor, dtype: torch.dtype) -> Tensor:
        """A [B, F] buffer for `encode_exact`'s selection product, kept between calls: a fresh one is
        page-faulted in on every call, which costs as long again as a bf16 product. `train()` drops it."""
        B, buf = rows_BD.shape[0], getattr(self, "_inference_buf", None)
        if buf is None or buf.shape[0] < B or buf.dtype != dtype or buf.device != rows_BD.device:
            self._inference_buf = buf = None  # free the old one first
            self._inference_buf = buf = torch.empty(B, self.cfg.n_latents, dtype=dtype, device=rows_BD.device)
        return buf[:B]

    def forward(self, x_BD: Tensor, dead_mask_F: Tensor | None = None, reduce: Reduce | None = None) -> SAEOutput:
        reduce = reduce or no_reduce
        x_BD = x_BD.to(self.W_enc.dtype)
        if type(self)._select is TopKSAE._select:
            # this class's own rule (not a subclass's): x and b_dec go in separately (a cheaper
            # b_dec gradient) and the [B, F] product reuses one buffer across training steps
            self.check_width(x_BD)
            enc_in = (x_BD, self.b_dec if self.cfg.apply_b_dec_to_input else None)
            pre_BF, values_BK, idx_BK = self._select_shifted(*enc_in, out=self._scratch_pre(x_BD))
        else:
            enc_in = (self.sae_input(x_BD), None)
            pre_BF, values_BK, idx_BK = self._select(enc_in[0])
        codes = Codes(values_BK, idx_BK, self.cfg.n_latents)
        xhat_BD = self.decode(codes)
        recon, fvu = self._fvu(x_BD, xhat_BD, reduce)
        aux = self._auxk_loss(enc_in, x_BD, xhat_BD, pre_BF, dead_mask_F, reduce)
        zero = recon.new_zeros(())
        return SAEOutput(xhat_BD, codes, recon, aux, zero, fvu, aux_weight=self.auxk_alpha)

    def _scratch_pre(self, x_BD: Tensor) -> Tensor | None:
        """The [B, F] selection product's buffer, kept between training steps (a fresh one is
        page-faulted in on every step on CPU); dropped by `eval()` so a trained SAE holds none."""
        if not self.training or torch.is_autocast_enabled(x_BD.device.type):
            return None
        dtype = self.selection_dtype or self.W_enc.dtype
        if dtype == torch.int8:  # the int32 accumulator
            dtype = torch.int32
        shape = (x_BD.shape[0], self.cfg.n_latents)
        buf = getattr(self, "_scratch_pre_BF", None)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != x_BD.device:
            self._scratch_pre_BF = buf = None  # free the old one first
            self._scratch_pre_BF = buf = torch.empty(shape, dtype=dtype, device=x_BD.device)
        return buf

    def train(self, mode: bool = True) -> TopKSAE:
        if not mode:
            self._scratch_pre_BF = None
        self._inference_encoder = self._inference_buf = None
        return super().train(mode)

    @property
    def refines_low_precision_selection(self) -> bool:
        """Whether a bf16 `selection_dtype` still picks float32's latents: this class's rule lets
        exact values decide among bf16's candidates (`select_topk`); a subclass's own `_select`
        (BatchTopK's) uses the bf16 product as it is."""
        return type(self)._select is TopKSAE._select

    @property
    def auxk_alpha(self) -> float:
        return float(self.cfg.auxk_alpha)

    def _auxk_loss(
        self, enc_in: tuple[Tensor, Tensor | None], x_BD: Tensor, xhat_BD: Tensor, pre_BF: Tensor,
        dead_mask_F: Tensor | None, reduce: Reduce,
    ) -> Tensor:
        """Reconstruct the residual from the top-k_aux dead latents (OpenAI's AuxK).

        Normalised by the residual's pooled centred variance (OpenAI divides by the residual's
        energy, sparsify by the input's variance: ours keeps the term O(1) as the residual
        shrinks) and scaled down while fewer than k_aux latents are dead, as sparsify does.
        """
        if dead_mask_F is None or self.auxk_alpha == 0:
            return x_BD.new_zeros(())
        dead_A = dead_mask_F.to(pre_BF.device).nonzero().squeeze(1)
        n_dead = int(dead_A.numel())
        if n_dead == 0:
            return x_BD.new_zeros(())
        k_aux = min(self.cfg.resolved_k_aux, n_dead)
        # the top k_aux among the dead columns only: no [B, F] masked copy of the product
        with torch.no_grad():
            idx_BA = dead_A[topk_indices(pre_BF.index_select(1, dead_A), k_aux)]
        exact_pre = pre_BF if self.selection_dtype != torch.int8 else None  # int8's is an approximation
        values_BA = torch.relu(select_values(enc_in[0], self.W_enc, self.b_enc, idx_BA, exact_pre, enc_in[1]))
        ehat_BD = sparse_decode(values_BA, idx_BA, self.W_dec)
        e_BD = (x_BD - xhat_BD).detach()
        variance = self._pooled_centred_sum_sq(e_BD, reduce)
        scale = min(n_dead / self.cfg.resolved_k_aux, 1.0)
        return scale * (ehat_BD - e_BD).pow(2).sum() / variance.to(e_BD.dtype)


def _best_k(cand_BM: Tensor, exact_BM: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(idx_BK in ascending order, their values): each row's k best candidates by value descending,
    then latent ascending (a total order: the same k whatever order the candidates came in)."""
    top = exact_BM.topk(k, dim=1, sorted=False)
    idx_BK, value_BK = cand_BM.gather(1, top.indices), top.values
    # topk breaks a tie at the k-th value as it happens to: rows where one crosses it, in full order
    tie_R = ((exact_BM >= value_BK.amin(1, keepdim=True)).sum(1) > k).nonzero().squeeze(1)
    if tie_R.numel():
        cand_RM, exact_RM = cand_BM[tie_R], exact_BM[tie_R]
        by_latent = cand_RM.sort(dim=1).indices
        best = exact_RM.gather(1, by_latent).sort(dim=1, descending=True, stable=True).indices[:, :k]
        pick = by_latent.gather(1, best)
        idx_BK[tie_R], value_BK[tie_R] = cand_RM.gather(1, pick), exact_RM.gather(1, pick)
    idx_BK, order = idx_BK.sort(dim=1)
    return idx_BK, value_BK.gather(1, order)
