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

import torch
from torch import Tensor

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


def int8_preactivation(
    rows_BD: Tensor, W_FD: Tensor, b_F: Tensor, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(approx_BF float32, err_B): rows·W_encᵀ + b_enc from an int8 product, and a bound on each
    row's error |approx − exact| valid for every latent. `out` ([B, F] float32) is reused; the int32
    accumulator is written into the same memory and rescaled in place."""
    if rows_BD.device.type != "cpu":
        raise ValueError(f"int8 selection runs on CPU only, got device {rows_BD.device}")
    D = rows_BD.shape[1]
    if D * 127 * 127 >= 2**31:
        raise ValueError(f"int8 selection needs d_in < {2**31 // 127**2} (int32 accumulator), got {D}")
    with torch.no_grad():
        rows_BD = rows_BD.detach().float()
        W_FD = W_FD.detach().float()
        q_BD, sx_B = _quantize_rows(rows_BD)
        w_scale = float(W_FD.abs().amax()) / 127 or 1.0
        q_FD = torch.round(W_FD / w_scale).clamp_(-127, 127).to(torch.int8)
        deq_BD = q_BD.float() * sx_B[:, None]
        r_err_B = torch.linalg.vector_norm(rows_BD - deq_BD, dim=1)
        r_norm_B = torch.linalg.vector_norm(deq_BD, dim=1)
        w_norm = float(torch.linalg.vector_norm(W_FD, dim=1).max())
        w_err = float(torch.linalg.vector_norm(W_FD - q_FD.float() * w_scale, dim=1).max())
        err_B = r_err_B * w_norm + r_norm_B * w_err
        b_F = b_F.detach().float()
        err_B = err_B * (1 + 1e-3) + _ROUNDING_SLACK * (r_norm_B * w_norm + float(b_F.abs().max()))
        acc_BF = torch._int_mm(q_BD, q_FD.T, out=None if out is None else out.view(torch.int32))
        # approx = acc · (sx_b · w_scale) + b: one pass, the float result over the int32 accumulator
        res = out if out is not None else torch.empty(acc_BF.shape, dtype=torch.float32)
        approx_BF = torch.addcmul(b_F, acc_BF, (sx_B * w_scale)[:, None], out=res)
    return approx_BF, err_B


def certified_topk(
    rows_BD: Tensor, W_FD: Tensor, b_F: Tensor, approx_BF: Tensor, err_B: Tensor, k: int, margin: int,
    topk_fn=None,
) -> tuple[Tensor, Tensor, int]:
    """(idx_BK, exact_BK, n_fallback): float32's top k per row (unordered) and their exact values,
    from the int8 approximation and its error bound; `n_fallback` rows needed a float32 product."""
    from mmsae.sae.kernels import _gather_dot, topk_indices

    topk_fn = topk_fn or topk_indices
    B, F = approx_BF.shape
    W_FD, b_F = W_FD.detach(), b_F.detach()
    n_cand = min(F, k + margin)
    with torch.no_grad():
        cand_BM = topk_fn(approx_BF, n_cand)
        exact_BM = _gather_dot(cand_BM, W_FD, rows_BD) + b_F[cand_BM]
        top = exact_BM.topk(k, dim=1, sorted=False)
        idx_BK, exact_BK = cand_BM.gather(1, top.indices), top.values
        if n_cand == F:  # every latent is a candidate: nothing outside to beat
            return idx_BK, exact_BK, 0
        floor_B = approx_BF.gather(1, cand_BM).amin(1)
        bad_R = (top.values.amin(1) < floor_B + err_B).nonzero().squeeze(1)
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
    if not int8_available() or d_in * 127 * 127 >= 2**31:
        return 0.0
    g = torch.Generator().manual_seed(0)
    n_f = max(512, min(n_latents, (1 << 22) // d_in))
    x = torch.randn(512, d_in, generator=g)
    W = torch.randn(n_f, d_in, generator=g) / d_in**0.5
    b = torch.zeros(n_f)
    out = torch.empty(512, n_f)

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    t_fp32 = best(lambda: torch.mm(x, W.T, out=out).add_(b))
    t_int8 = best(lambda: int8_preactivation(x, W, b, out=out))
    return t_fp32 / t_int8
