"""Sparse kernels: decoding and the encoder's backward touch only the k active rows.

With F latents, k active per token, B tokens and width D, a dense decoder costs B·F·D for the
product and again for each gradient; these cost B·k·D. The encoder's forward stays one dense
product (needed to find the top k), but its backward is sparse too: the gradient reaches only the
gathered pre-activations, so `index_add_` builds dW_enc and `embedding_bag` builds dx.
"""

from __future__ import annotations

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
        return _csr_transpose(idx_BK, coeff_BK.to(rows_BD.dtype), n_rows) @ rows_BD
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(crow, col, coeff_BK.reshape(-1)[order], (n_rows, B))


def _gather_dot(idx_BK: Tensor, table_FD: Tensor, rows_BD: Tensor) -> Tensor:
    """out[b,k] = table[idx[b,k]] · rows[b].

    This is exactly embedding_bag's per-sample-weight gradient, a fused kernel that never
    materialises the [B, K, D] gather, so we borrow it through autograd.
    """
    with torch.enable_grad():
        weights_BK = torch.zeros(idx_BK.shape, dtype=table_FD.dtype, device=table_FD.device, requires_grad=True)
        out_BD = F.embedding_bag(idx_BK, table_FD.detach(), per_sample_weights=weights_BK, mode="sum")
        # a scalar objective rather than grad_outputs: passing a gradient tensor makes autograd
        # import sympy (seconds) in every process
        (grad_BK,) = torch.autograd.grad((out_BD * rows_BD.to(table_FD.dtype)).sum(), weights_BK)
    return grad_BK


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
    """pre[b,k] = W_enc[idx[b,k]] · x[b] + b_enc[idx[b,k]], read from an already computed dense
    pre-activation (so the dense product runs once, without autograd) with a sparse backward."""

    @staticmethod
    def forward(ctx, x_BD: Tensor, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor, pre_BF: Tensor | None) -> Tensor:
        ctx.save_for_backward(x_BD, W_FD, idx_BK)
        if pre_BF is not None:
            return pre_BF.gather(1, idx_BK).to(W_FD.dtype)
        return _gather_dot(idx_BK, W_FD, x_BD.to(W_FD.dtype)) + b_F[idx_BK]

    @staticmethod
    def backward(ctx, grad_BK: Tensor):
        x_BD, W_FD, idx_BK = ctx.saved_tensors
        grad_BK = grad_BK.contiguous()
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = F.embedding_bag(idx_BK, W_FD, per_sample_weights=grad_BK.to(W_FD.dtype), mode="sum")
            grad_x = grad_x.to(x_BD.dtype)
        if ctx.needs_input_grad[1]:
            grad_W = _scatter_rows(idx_BK, grad_BK, x_BD.to(grad_BK.dtype), W_FD.shape[0])
        if ctx.needs_input_grad[2]:
            grad_b = grad_BK.new_zeros(W_FD.shape[0]).index_add_(0, idx_BK.reshape(-1), grad_BK.reshape(-1))
        return grad_x, grad_W, grad_b, None, None


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


def gather_linear(x_BD: Tensor, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor, pre_BF: Tensor | None = None) -> Tensor:
    return GatherLinear.apply(x_BD, W_FD, b_F, idx_BK, pre_BF)


def dense_preactivation(x_BD: Tensor, W_FD: Tensor, b_F: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The one dense product of a step, outside autograd: its backward is done sparsely.

    `dtype=torch.bfloat16` runs it on AMX / tensor cores; callers then use it only to *select*
    latents and recompute the k selected values exactly in the weights' dtype.
    """
    dtype = dtype or x_BD.dtype
    with torch.no_grad():
        return torch.addmm(b_F.to(dtype), x_BD.to(dtype), W_FD.to(dtype).T)


def select_values(x_BD: Tensor, W_FD: Tensor, b_F: Tensor, idx_BK: Tensor, pre_BF: Tensor) -> Tensor:
    """Pre-activations at the selected latents, with a sparse backward; read from `pre_BF` when it
    is exact (same dtype as the weights), recomputed in B·K·D otherwise (low-precision selection)."""
    exact = pre_BF.dtype == W_FD.dtype and not torch.is_autocast_enabled(pre_BF.device.type)
    return gather_linear(x_BD, W_FD, b_F, idx_BK, pre_BF if exact else None)
