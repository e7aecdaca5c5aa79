"""Int8 TopK selection with a certificate: float32's top k, from an int8 product.

A CPU without native bf16 emulates bf16 products (slower than float32), but oneDNN multiplies int8
with AVX512-VNNI / AVX-VNNI (or AVX2's pairwise multiply-adds) at several times float32's rate.
So the selection product runs in int8: rows quantised per row, the encoder per tensor, giving
approximate pre-activations a_bf with a *proven* error bound per row:

    |r·w − r̃·w̃| = |(r − r̃)·w + r̃·(w − w̃)| ≤ ‖r − r̃‖·max_f‖w_f‖ + ‖r̃‖·max_f‖w_f − w̃_f‖ =: E_b

(Cauchy–Schwarz on each term; r̃, w̃ the dequantised vectors). Exact float32 values of each row's
top k + margin candidates then pick the k, and a row is *certified* when its k-th exact value is at
least the smallest candidate's approximation plus E_b: no latent outside the candidates can then
exceed it (its exact value is at most its approximation plus E_b). Rows that fail the certificate
fall back to an exact float32 product of those rows alone. So the selected set is float32's up to
ties within fp32 rounding, on any data (outlier dimensions only make more rows fall back).
The bound is worst-case (the quantisation error is not aligned with w in practice), so the margin
must be generous; `TopKSAE` widens it when many rows fall back.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from mmsae.sae.kernels import encoder_with_bias_column, with_bias_column

# fp32 rounding of the dequantised product and of the exact recomputation, relative to the
# bound's scale ‖r‖·max‖w‖; far below the int8 quantisation error (~1e-2 of that scale)
_ROUNDING_SLACK = 1e-5


def int8_available() -> bool:
    """Whether this torch build multiplies int8 on CPU (`torch._int_mm`, oneDNN)."""
    if not hasattr(torch, "_int_mm"):
        return False
    try:
        a = torch.ones(17, 16, dtype=torch.int8)
        return bool((torch._int_mm(a, a.T.contiguous()) == 16).all())
    except RuntimeError:
        return False


def _quantize_rows(t_MD: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: (q_MD, scale_M) with t ≈ scale·q; an all-zero row gets scale 1."""
    scale_M = t_MD.abs().amax(1) / 127
    scale_M = torch.where(scale_M > 0, scale_M, torch.ones_like(scale_M))
    return torch.round(t_MD / scale_M[:, None]).clamp_(-127, 127).to(torch.int8), scale_M


@dataclass
class Int8Product:
    """rows·W_encᵀ + b_enc ≈ acc_BF · scale_B (per row), with each row's error bound err_B.

    b_enc rides in the int8 product (an extra input column, see `int8_preactivation`), so a row's
    approximation is its int32 accumulator times one positive scale: ordering the row by `acc_BF`
    orders it by the approximation, and selection never needs the [B, F] float approximation."""

    acc_BF: Tensor  # int32
    scale_B: Tensor  # float32, > 0
    err_B: Tensor  # float32

    def approx(self) -> Tensor:
        """The float32 approximation, [B, F] (tests and diagnostics; selection reads acc_BF)."""
        return self.acc_BF.float() * self.scale_B[:, None]

    def approx_at(self, idx_BM: Tensor) -> Tensor:
        return self.acc_BF.gather(1, idx_BM).float() * self.scale_B[:, None]


def int8_preactivation(rows_BD: Tensor, W_FD: Tensor, b_F: Tensor, out: Tensor | None = None) -> Int8Product:
    """rows·W_encᵀ + b_enc from an int8 product, with a bound on each row's error valid for every latent.

    The bias enters as a column: rows get a constant c and W_enc the column b_enc/c, so
    [r, c]·[w, b/c] = r·w + b and the certificate's bound, computed on these augmented vectors, covers
    the bias too (`with_bias_column`). `out` ([B, F] int32) receives the accumulator."""
    if rows_BD.device.type != "cpu":
        raise ValueError(f"int8 selection runs on CPU only, got device {rows_BD.device}")
    B, D = rows_BD.shape
    if (D + 1) * 127 * 127 >= 2**31:
        raise ValueError(f"int8 selection needs d_in < {2**31 // 127**2 - 1} (int32 accumulator), got {D}")
    with torch.no_grad():
        rows_BD = rows_BD.detach().float()
        # c = max|b| / max|W|: the bias column's largest entry equals W's, so it never coarsens W's
        # int8 scale; capped at the median row max-abs, so it sets few rows' scales (measured: a
        # batch-mean c made 5x more rows fall back to float32)
        w_max = float(W_FD.detach().abs().max())
        c = float(b_F.detach().abs().max()) / w_max if w_max > 0 else 1.0
        if B:
            c = min(c, float(rows_BD.abs().amax(1).median()))
        c = c if c > 0 else 1.0
        rows_BA = with_bias_column(rows_BD, c, torch.float32)
        W_FA = encoder_with_bias_column(W_FD.float(), b_F.float(), c, torch.float32)
        q_BA, sx_B = _quantize_rows(rows_BA)
        w_scale = float(W_FA.abs().amax()) / 127 or 1.0
        q_FA = torch.round(W_FA / w_scale).clamp_(-127, 127).to(torch.int8)
        deq_BA = q_BA.float() * sx_B[:, None]
        r_err_B = torch.linalg.vector_norm(rows_BA - deq_BA, dim=1)
        r_norm_B = torch.linalg.vector_norm(deq_BA, dim=1)
        w_norm = float(torch.linalg.vector_norm(W_FA, dim=1).max())
        w_err = float(torch.linalg.vector_norm(W_FA - q_FA.float() * w_scale, dim=1).max())
        err_B = (r_err_B * w_norm + r_norm_B * w_err) * (1 + 1e-3) + _ROUNDING_SLACK * r_norm_B * w_norm
        acc_BF = torch._int_mm(q_BA, q_FA.T, out=out)
    return Int8Product(acc_BF, sx_B * w_scale, err_B)


def certified_topk(
    rows_BD: Tensor, W_FD: Tensor, b_F: Tensor, product: Int8Product, k: int, margin: int, topk_fn=None,
) -> tuple[Tensor, Tensor, int]:
    """(idx_BK, exact_BK, n_fallback): float32's top k per row (unordered) and their exact values,
    from the int8 product and its error bound; `n_fallback` rows needed a float32 product."""
    from mmsae.sae.kernels import _gather_dot, topk_indices

    topk_fn = topk_fn or topk_indices
    B, F = product.acc_BF.shape
    W_FD, b_F = W_FD.detach(), b_F.detach()
    n_cand = min(F, k + margin)
    with torch.no_grad():
        cand_BM = topk_fn(product.acc_BF, n_cand)
        exact_BM = _gather_dot(cand_BM, W_FD, rows_BD) + b_F[cand_BM]
        top = exact_BM.topk(k, dim=1, sorted=False)
        idx_BK, exact_BK = cand_BM.gather(1, top.indices), top.values
        if n_cand == F:  # every latent is a candidate: nothing outside to beat
            return idx_BK, exact_BK, 0
        floor_B = product.approx_at(cand_BM).amin(1)
        bad_R = (top.values.amin(1) < floor_B + product.err_B).nonzero().squeeze(1)
        if bad_R.numel():
            exact_RF = rows_BD.index_select(0, bad_R) @ W_FD.T + b_F
            idx_RK = topk_fn(exact_RF, k)
            idx_BK[bad_R] = idx_RK
            exact_BK[bad_R] = exact_RF.gather(1, idx_RK)
    return idx_BK, exact_BK, int(bad_R.numel())


@functools.lru_cache(maxsize=16)
def int8_speedup(d_in: int, n_latents: int, threads: int) -> float:
    """float32 time / int8 time of the selection product on this CPU, from a startup probe of
    ~4 GFLOP at the SAE's width (best of 3 each): int8's quantisation and rescale included.
    0.0 where this torch build has no CPU int8 product."""
    if not int8_available() or (d_in + 1) * 127 * 127 >= 2**31:
        return 0.0
    g = torch.Generator().manual_seed(0)
    n_f = max(512, min(n_latents, (1 << 22) // d_in))
    x = torch.randn(512, d_in, generator=g)
    W = torch.randn(n_f, d_in, generator=g) / d_in**0.5
    b = torch.zeros(n_f)
    out = torch.empty(512, n_f)
    acc = torch.empty(512, n_f, dtype=torch.int32)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_fp32 = best(lambda: torch.mm(x, W.T, out=out).add_(b))
    t_int8 = best(lambda: int8_preactivation(x, W, b, out=acc))
    return t_fp32 / t_int8
