"""The Triton decoder, run by the Triton interpreter on CPU; skipped where triton is absent."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

SCRIPT = textwrap.dedent(
    """
    import torch
    from mmsae.sae import triton_kernels as tk
    assert tk.available() and tk.interpreting()
    g = torch.Generator().manual_seed(0)
    B, K, F, D = 6, 4, 30, 40   # D not a power of two: exercises the masks
    idx = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    v = torch.randn(B, K, generator=g, requires_grad=True)
    W = torch.randn(F, D, generator=g, requires_grad=True)
    gout = torch.randn(B, D, generator=g)
    out = tk.TritonSparseDecode.apply(v, idx, W)
    out.backward(gout)
    v64 = v.detach().double().requires_grad_(); W64 = W.detach().double().requires_grad_()
    ref = (torch.zeros(B, F, dtype=torch.float64).scatter(1, idx, v64)) @ W64
    ref.backward(gout.double())
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v.grad.double(), v64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(W.grad.double(), W64.grad, rtol=1e-5, atol=1e-5)
    print("ok")
    """
)


def test_triton_decode_interpreter_matches_float64_reference():
    # TRITON_INTERPRET must be set before triton is imported, hence a fresh interpreter.
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
