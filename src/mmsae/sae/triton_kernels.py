"""Optional Triton path for sparse decoding on GPU (triton is not a dependency).

Forward: one program per (token, block of D) accumulates Σ_k v[b,k]·W[idx[b,k], d] in fp32.
Backward: grad_values is the same gather as a dot product, done in a second kernel; grad_W is a
scatter that `index_add_` already does well on GPU, so it reuses the torch implementation.
Tests run the kernels on CPU with TRITON_INTERPRET=1.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from mmsae.sae.kernels import _scatter_rows

try:  # pragma: no cover - depends on the environment
    import triton
    import triton.language as tl

    _HAVE_TRITON = True
except Exception:  # noqa: BLE001 - any import failure means "no Triton here"
    _HAVE_TRITON = False


def available() -> bool:
    return _HAVE_TRITON


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if _HAVE_TRITON:

    @triton.jit
    def _decode_kernel(idx_ptr, val_ptr, w_ptr, out_ptr, K, D, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        mask = offs < D
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for j in range(K):
            row = tl.load(idx_ptr + b * K + j).to(tl.int64)
            v = tl.load(val_ptr + b * K + j).to(tl.float32)
            w = tl.load(w_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
            acc += v * w
        tl.store(out_ptr + b * D + offs, acc, mask=mask)

    @triton.jit
    def _grad_values_kernel(idx_ptr, grad_ptr, w_ptr, out_ptr, K, D, BLOCK_D: tl.constexpr):
        b = tl.program_id(0)
        j = tl.program_id(1)
        row = tl.load(idx_ptr + b * K + j).to(tl.int64)
        acc = tl.zeros([BLOCK_D], dtype=tl.float32)
        for start in range(0, D, BLOCK_D):
            offs = start + tl.arange(0, BLOCK_D)
            mask = offs < D
            g = tl.load(grad_ptr + b * D + offs, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + row * D + offs, mask=mask, other=0.0).to(tl.float32)
            acc += g * w
        tl.store(out_ptr + b * K + j, tl.sum(acc, axis=0))


def _block(D: int) -> int:
    return min(1024, triton.next_power_of_2(D))


def triton_decode(values_BK: Tensor, idx_BK: Tensor, W_FD: Tensor) -> Tensor:
    B, K = idx_BK.shape
    D = W_FD.shape[1]
    out_BD = torch.empty(B, D, dtype=torch.float32, device=W_FD.device)
    blk = _block(D)
    _decode_kernel[(B, triton.cdiv(D, blk))](
        idx_BK.contiguous(), values_BK.contiguous(), W_FD.contiguous(), out_BD, K, D, BLOCK_D=blk
    )
    return out_BD.to(W_FD.dtype)


def triton_grad_values(idx_BK: Tensor, grad_BD: Tensor, W_FD: Tensor) -> Tensor:
    B, K = idx_BK.shape
    D = W_FD.shape[1]
    out_BK = torch.empty(B, K, dtype=torch.float32, device=W_FD.device)
    _grad_values_kernel[(B, K)](idx_BK.contiguous(), grad_BD.contiguous(), W_FD.contiguous(), out_BK, K, D, BLOCK_D=_block(D))
    return out_BK.to(grad_BD.dtype)


class TritonSparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values_BK: Tensor, idx_BK: Tensor, W_dec_FD: Tensor) -> Tensor:
        ctx.save_for_backward(values_BK, idx_BK, W_dec_FD)
        return triton_decode(values_BK, idx_BK, W_dec_FD)

    @staticmethod
    def backward(ctx, grad_BD: Tensor):
        values_BK, idx_BK, W_dec_FD = ctx.saved_tensors
        grad_values = grad_W = None
        if ctx.needs_input_grad[0]:
            grad_values = triton_grad_values(idx_BK, grad_BD, W_dec_FD)
        if ctx.needs_input_grad[2]:
            grad_W = _scatter_rows(idx_BK, values_BK, grad_BD.contiguous(), W_dec_FD.shape[0])
        return grad_values, None, grad_W
