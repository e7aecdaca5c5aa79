"""Sparse kernels: decoding and the encoder's backward touch only the k active rows.

With F latents, k active per token, B tokens and width D, a dense decoder costs B·F·D for the
product and again for each gradient; these cost B·k·D. The encoder's forward stays one dense
product (needed to find the top k; bf16 where that is fast, as it only has to *select*), but its
backward is sparse too: the gradient reaches only the gathered pre-activations, so a CSR product
builds dW_enc, a sampled product the exact values, and b_dec's gradient is one [F]×[F, D] product.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

# Bound temporaries at about this many elements; a [B·K, D] buffer would be 268 MB at B=4096, K=32, D=512.
_CHUNK_ELEMENTS = 1 << 23


def _k_chunks(n_k: int, row_elements: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    return [slice(s, min(s + step, n_k)) for s in range(0, n_k, step)]


def _scatter_rows(idx_BK: Tensor, coeff_BK: Tensor, rows_BD: Tensor, n_rows: int) -> Tensor:
    """out[f] = Σ_{b,k : idx[b,k]=f} coeff[b,k] · rows[b]  — a dense [F, D] result, built sparsely.

    On CPU this is a CSR [F, B] × dense [B, D] product (≈10x faster than `index_add_`, which
    goes through a [B·K, D] temporary); on GPU `index_add_`'s atomics are the fast path.
    """
    if rows_BD.device.type == "cpu" and rows_BD.dtype in (torch.float32, torch.float64):
        # into an uninitialised output with beta=0 (which ignores it): `@` would zero-fill a fresh
        # [F, D] tensor first and copy its result over, two extra passes
        out_FD = rows_BD.new_empty(n_rows, rows_BD.shape[1])
        S_FB = _csr_transpose(idx_BK, coeff_BK.to(rows_BD.dtype), n_rows)
        return torch.addmm(out_FD, S_FB, rows_BD, beta=0, out=out_FD)
    B, K = idx_BK.shape
    out_FD = rows_BD.new_zeros(n_rows, rows_BD.shape[1])
    for sl in _k_chunks(K, B * rows_BD.shape[1]):
        idx = idx_BK[:, sl].T.reshape(-1)
        src = (coeff_BK[:, sl].T.unsqueeze(-1) * rows_BD.unsqueeze(0)).reshape(-1, rows_BD.shape[1])
        out_FD.index_add_(0, idx, src)
    return out_FD


def _csr_transpose(idx_BK: Tensor, coeff_BK: Tensor, n_rows: int) -> Tensor:
    """The [F, B] CSR matrix Sᵀ of the sparse codes S[b, idx[b,k]] = coeff[b,k].

    The sparsity pattern depends on idx only, and a step's two scatters (dW_dec, dW_enc) share
    one idx, so the pattern is computed once and kept on the idx tensor for the second call."""
    B, K = idx_BK.shape
    pattern = getattr(idx_BK, "_csr_pattern", None)
    if pattern is None or pattern[0] != n_rows:
        flat = idx_BK.reshape(-1)
        # stable: a deterministic summation order per row; int32 keys sort ~9x faster than int64
        order = flat.to(torch.int32).argsort(stable=True)
        crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=flat.device)
        crow[1:] = torch.bincount(flat, minlength=n_rows).cumsum(0)
        pattern = (n_rows, order, crow, order // K)
        idx_BK._csr_pattern = pattern
    _, order, crow, col = pattern
    return _sparse_csr(crow, col, coeff_BK.reshape(-1)[order], (n_rows, B))


def _gather_dot(idx_BK: Tensor, table_FD: Tensor, rows_BD: Tensor) -> Tensor:
    """out[b,k] = table[idx[b,k]] · rows[b], never materialising the [B, K, D] gather.

    On CPU this is a sampled dense product (rows @ tableᵀ at the codes' pattern, whose CSR form
    needs no sort: row b holds idx[b]); elsewhere embedding_bag's per-sample-weight gradient, a
    fused kernel we call directly (through autograd it would also run embedding_bag's forward).
    """
    B, K = idx_BK.shape
    rows_BD = rows_BD.to(table_FD.dtype).contiguous()
    table_FD = table_FD.detach()
    if rows_BD.device.type == "cpu" and rows_BD.dtype in (torch.float32, torch.float64):
        crow = torch.arange(0, B * K + 1, K, device=idx_BK.device)
        pattern = _sparse_csr(crow, idx_BK.reshape(-1), rows_BD.new_zeros(B * K), (B, table_FD.shape[0]))
        return torch.sparse.sampled_addmm(pattern, rows_BD, table_FD.T, beta=0.0).values().view(B, K)
    offsets, offset2bag = _bags(B, K, idx_BK.device)
    out = torch.ops.aten._embedding_bag_per_sample_weights_backward(
        rows_BD, table_FD, idx_BK.reshape(-1), offsets, offset2bag, 0, -1
    )
    return out.view(B, K)


def _sparse_csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, values, size)


@functools.lru_cache(maxsize=8)
def _bags(B: int, K: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """embedding_bag's bookkeeping for B bags of K indices: bag starts and each index's bag."""
    offsets = torch.arange(0, B * K, K, device=device)
    return offsets, torch.arange(B, device=device).repeat_interleave(K)


class SparseDecode(torch.autograd.Function):
    """x̂[b] = Σ_k values[b,k] · W_dec[idx[b,k]] (no bias)."""

    @staticmethod
    def forward(ctx, values_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
        ctx.save_for_backward(values_BK, idx_BK, W_dec_FD)
        return F.embedding_bag(idx_BK, W_dec_FD, per_sample_weights=values_BK, mode="sum")

    @staticmethod
    def backward(ctx, grad_BD: Tensor):
        values_BK, idx_BK, W_dec_FD = ctx.saved_tensors
        grad_BD = grad_BD.contiguous()
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = _gather_dot(idx_BK, W_dec_FD, grad_BD)
        if ctx.needs_input_grad[2]:
            grad_W = _scatter_rows(idx_BK, values_BK, grad_BD, W_dec_FD.shape[0])
        return grad_values, None, grad_W


class GatherLinear(torch.autograd.Function):
    """pre[b,k] = W_enc[idx[b,k]] · (x[b] − shift) + b_enc[idx[b,k]], read from an already computed
    dense pre-activation (so the dense product runs once, without autograd) or recomputed in
    B·K·D, with a sparse backward.

    The shift (b_dec) is an input of its own rather than folded into x: its gradient is
    −Σ_{b,k} g[b,k]·W[idx[b,k]] = −(grad_b_enc @ W), one [F]×[F, D] product, where going through
    x − b_dec would cost a per-token [B, D] gradient (another B·K·D pass) and its sum.
    """

    @staticmethod
    def forward(ctx, x_BD: Tensor, shift_D: Tensor | None, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor,
                pre_BF: Tensor | None, pre_BK: Tensor | None = None, rows_BD: Tensor | None = None) -> Tensor:
        if rows_BD is None:  # what the encoder sees, x − shift; dW_enc needs it too
            rows_BD = encoder_input(x_BD, shift_D, W_FD.dtype)
        ctx.dtypes = (x_BD.dtype, None if shift_D is None else shift_D.dtype)
        ctx.save_for_backward(rows_BD, W_FD, idx_BK)
        if pre_BK is not None:  # already computed exactly at idx
            return pre_BK.to(W_FD.dtype)
        if pre_BF is not None:
            return pre_BF.gather(1, idx_BK).to(W_FD.dtype)
        return _gather_dot(idx_BK, W_FD, rows_BD) + b_F[idx_BK]

    @staticmethod
    def backward(ctx, grad_BK: Tensor):
        rows_BD, W_FD, idx_BK = ctx.saved_tensors
        x_dtype, shift_dtype = ctx.dtypes
        grad_BK = grad_BK.contiguous().to(W_FD.dtype)
        grad_x = grad_shift = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(idx_BK, W_FD, per_sample_weights=grad_BK, mode="sum").to(x_dtype)
        if ctx.needs_input_grad[2]:
            grad_W = _scatter_rows(idx_BK, grad_BK, rows_BD, W_FD.shape[0])
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            grad_b = grad_BK.new_zeros(W_FD.shape[0]).index_add_(0, idx_BK.reshape(-1), grad_BK.reshape(-1))
            if ctx.needs_input_grad[1]:
                grad_shift = -(grad_b @ W_FD).to(shift_dtype)
        return grad_x, grad_shift, grad_W, grad_b, None, None, None, None


def encoder_input(x_BD: Tensor, shift_D: Tensor | None, dtype: torch.dtype) -> Tensor:
    """x − shift without autograd, subtracted in x's precision (not after rounding to `dtype`)."""
    x_BD = x_BD.detach()
    return (x_BD if shift_D is None else x_BD - shift_D.detach().to(x_BD.dtype)).to(dtype)


def _use_triton(t: Tensor) -> bool:
    # CPU tensors could run under TRITON_INTERPRET=1, but that is a test aid, far slower than
    # torch; and importing triton costs seconds, so look at the device first.
    if not t.is_cuda or os.environ.get("MMSAE_TRITON", "1") == "0":
        return False
    from mmsae.sae import triton_kernels

    return triton_kernels.available()


def sparse_decode(values_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
    """Decode sparse codes without the bias; Triton on GPU when installed, torch elsewhere."""
    values_BK = values_BK.to(W_dec_FD.dtype)
    if _use_triton(W_dec_FD):
        from mmsae.sae.triton_kernels import TritonSparseDecode

        return TritonSparseDecode.apply(values_BK, idx_BK, W_dec_FD)
    return SparseDecode.apply(values_BK, idx_BK, W_dec_FD)


def gather_linear(
    x_BD: Tensor, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor, pre_BF: Tensor | None = None, shift_D: Tensor | None = None
) -> Tensor:
    return GatherLinear.apply(x_BD, shift_D, W_FD, b_F, idx_BK, pre_BF)


def dense_preactivation(
    x_BD: Tensor, W_FD: Tensor, b_F: Tensor, dtype: torch.dtype | None = None, shift_D: Tensor | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """The one dense product of a step, (x − shift)·W_encᵀ + b_enc, outside autograd: its backward
    is done sparsely.

    `dtype=torch.bfloat16` runs it on AMX / AVX512-BF16 / tensor cores; callers then use it only
    to *select* latents and recompute the k selected values exactly in the weights' dtype. There the
    bias rides in the product as a column (`with_bias_column`): a separate add is another pass over
    [B, F] that costs as long as the product itself where AMX multiplies (B=4096, F=8192, d_in 512:
    product 16 ms, bf16 add 20 ms), and the sum is rounded to bf16 once instead of twice. In the
    weights' own dtype the values are the exact ones callers read, so they stay one product plus one
    add. `out` (shape [B, F], that dtype) is reused instead of allocating: on CPU a fresh [B, F] buffer
    is page-faulted in on every step, ~20 % of the product's own time at B=4096, F=8192.
    """
    dtype = dtype or x_BD.dtype
    with torch.no_grad():
        if dtype != W_FD.dtype:
            rows_BA = with_bias_column(encoder_input(x_BD, shift_D, x_BD.dtype), 1.0, dtype)
            return torch.mm(rows_BA, encoder_with_bias_column(W_FD, b_F, 1.0, dtype).T, out=out)
        x_BD = encoder_input(x_BD, shift_D, dtype)
        pre_BF = torch.mm(x_BD, W_FD.detach().to(dtype).T, out=out)
        # a separate in-place add: addmm would first broadcast the bias into all of [B, F] anyway
        return pre_BF.add_(b_F.detach().to(dtype))


def topk_indices(scores_BF: Tensor, k: int) -> Tensor:
    """Indices of the k largest scores of each row, in no particular order (torch.topk's set, up
    to ties), ~1.5x faster than torch.topk for wide rows on CPU.

    Each row is split into c groups of g strided columns ({j, j+c, j+2c, ...}). The k largest
    entries all lie in the k groups with the largest maxima: an entry outside them is exceeded by
    those k maxima. So a vectorised max over groups, a top-k over the c maxima (recursively the
    same way) and a top-k over the k·g candidates replace one top-k over F. torch's top-k costs
    ~1 µs per row and a few ns per entry; the max over groups, a fraction of a ns per entry.
    """
    B, n = scores_BF.shape
    g = _group_size(n, k)
    if g is None or scores_BF.device.type != "cpu":  # torch.topk is already fast on GPUs
        return scores_BF.topk(k, dim=1, sorted=False).indices
    c = n // g
    grouped_BGC = scores_BF.contiguous().view(B, g, c)
    group_BK = topk_indices(grouped_BGC.amax(1), k)
    cand_BGK = grouped_BGC.gather(2, group_BK.unsqueeze(1).expand(B, g, k))
    pick_BK = cand_BGK.view(B, g * k).topk(k, dim=1, sorted=False).indices
    return group_BK.gather(1, pick_BK % k) + c * (pick_BK // k)


def topk_candidates(scores_BF: Tensor, k: int) -> Tensor:
    """`topk_indices` for a candidate search whose picks among tied scores do not matter (exact values
    decide among the candidates afterwards, as in `TopKSAE.encode_exact`). A bf16 matrix on CPU is
    searched on its bits read as int16: torch's int16 max and top-k run ~3x and ~1.5x faster than its
    bf16 ones, which convert each element. The bits of non-negative bf16 values (NaN, +inf included)
    order as the values; negative values' bits all sort below them, in reverse order among themselves.
    So a row whose k picks are all non-negative has the right picks, and a row where a negative value
    made it in is searched again by value. Ties may be broken otherwise than `topk_indices` breaks them,
    so it serves the searches whose candidates exact values then rank (`select_topk`, `encode_exact`);
    AuxK keeps `topk_indices`, since it ranks dead latents by the bf16 values themselves."""
    if scores_BF.dtype != torch.bfloat16 or scores_BF.device.type != "cpu":
        return topk_indices(scores_BF, k)
    bits_BF = scores_BF.contiguous().view(torch.int16)
    idx_BK = topk_indices(bits_BF, k)
    redo_R = (bits_BF.gather(1, idx_BK).amin(1) < 0).nonzero().squeeze(1)
    if redo_R.numel():
        idx_BK[redo_R] = topk_indices(scores_BF.index_select(0, redo_R), k)
    return idx_BK


def with_bias_column(rows_BD: Tensor, c: float, dtype: torch.dtype) -> Tensor:
    """[rows, c, 0...]: the rows with a constant column, zero-padded to a width that is a multiple of 16
    (oneDNN's bf16 and int8 kernels work in such blocks). Against `encoder_with_bias_column(W, b, c)`
    the product is rows·Wᵀ + b in one GEMM, with no separate pass over [B, F] to add the bias."""
    B, D = rows_BD.shape
    out_BA = rows_BD.new_zeros(B, -(-(D + 1) // 16) * 16, dtype=dtype)
    out_BA[:, :D], out_BA[:, D] = rows_BD, c
    return out_BA


def encoder_with_bias_column(W_FD: Tensor, b_F: Tensor, c: float, dtype: torch.dtype) -> Tensor:
    """[W, b/c, 0...], the partner of `with_bias_column(rows, c)`."""
    F, D = W_FD.shape
    out_FA = W_FD.new_zeros(F, -(-(D + 1) // 16) * 16, dtype=dtype)
    out_FA[:, :D], out_FA[:, D] = W_FD.detach(), b_F.detach().to(dtype) / c
    return out_FA


def _group_size(n_cols: int, k: int) -> int | None:
    """Groups of 8 while that leaves ≥ 4k maxima, then of 4 while ≥ 2k: measured best (or within
    5 %) for F = 4096-32768, k = 32-64. None where grouping would not shrink the work."""
    for g, min_groups in ((8, 4 * k), (4, 2 * k)):
        if n_cols % g == 0 and n_cols // g >= min_groups:
            return g
    return None


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 products run natively here: CUDA from Ampere (sm_80) on, CPUs with AVX512-BF16
    or AMX (elsewhere a CPU emulates bf16, slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return torch.backends.mkldnn.is_available() and any(p is not None and p() for p in probes)
    return False


def select_values(
    x_BD: Tensor, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor, pre_BF: Tensor | None, shift_D: Tensor | None = None
) -> Tensor:
    """Pre-activations at the selected latents, with a sparse backward; read from `pre_BF` when it
    is exact (same dtype as the weights), recomputed in B·K·D otherwise (low-precision selection,
    or `pre_BF=None`: an approximation in the weights' dtype, as int8's)."""
    exact = pre_BF is not None and _is_exact(pre_BF, W_FD)
    return gather_linear(x_BD, W_FD, b_F, idx_BK, pre_BF if exact else None, shift_D)


def select_topk(
    x_BD: Tensor, W_FD: Tensor, b_F: Tensor, pre_BF: Tensor, k: int, shift_D: Tensor | None = None,
    rows_BD: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """(idx_BK, pre_BK): the k largest exact pre-activations (x − shift)·Wᵀ + b of each row, at
    idx_BK (unordered), and their values with a sparse backward.

    From `pre_BF` directly when it is exact. A low-precision `pre_BF` (bf16) only narrows each row
    to k + margin candidates, whose exact values then pick the k: bf16's rounding reorders
    near-ties (k=32 of 8192 latents, an SAE 40 steps into the benchmark's run: 1.1 % of bf16's
    picks differ from float32's, a measurable FVU cost), but bf16's top 36 held 99.995 % of the
    true top 32 and its top 40 all of them (k=16, 64: its top k+4, k+16 held all). With a margin
    of max(8, k/4) the selection is float32's, for ~25 % more sampled dot products.
    `rows_BD`, if the caller has it, is x − shift in the weights' dtype.
    """
    if _is_exact(pre_BF, W_FD):
        idx_BK = topk_indices(pre_BF, k)
        return idx_BK, GatherLinear.apply(x_BD, shift_D, W_FD, b_F, idx_BK, pre_BF, None, rows_BD)
    if rows_BD is None:
        rows_BD = encoder_input(x_BD, shift_D, W_FD.dtype)
    n_cand = min(pre_BF.shape[1], k + max(8, k // 4))
    cand_BM = topk_candidates(pre_BF, n_cand)  # exact values decide among the candidates
    with torch.no_grad():
        exact_BM = _gather_dot(cand_BM, W_FD, rows_BD) + b_F.detach()[cand_BM]
        pick_BK = exact_BM.topk(k, dim=1, sorted=False).indices
        idx_BK = cand_BM.gather(1, pick_BK)
    return idx_BK, GatherLinear.apply(x_BD, shift_D, W_FD, b_F, idx_BK, None, exact_BM.gather(1, pick_BK), rows_BD)


def _is_exact(pre_BF: Tensor, W_FD: Tensor) -> bool:
    return pre_BF.dtype == W_FD.dtype and not torch.is_autocast_enabled(pre_BF.device.type)
