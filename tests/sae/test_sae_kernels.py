"""Sparse kernels against a dense float64 reference: values and every gradient."""

import pytest
import torch

from mmsae.sae.kernels import gather_linear, sparse_decode

B, K, F, D = 9, 5, 40, 12


def _inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx_BK = torch.stack([torch.randperm(F, generator=g)[:K] for _ in range(B)])
    values_BK = torch.randn(B, K, generator=g, dtype=dtype)
    W_FD = torch.randn(F, D, generator=g, dtype=dtype)
    return values_BK, idx_BK, W_FD


def _dense_decode(values_BK, idx_BK, W_FD):
    dense_BF = torch.zeros(B, F, dtype=values_BK.dtype).scatter(1, idx_BK, values_BK)
    return dense_BF @ W_FD


def test_sparse_decode_matches_dense_float64_values_and_grads():
    values_BK, idx_BK, W_FD = _inputs()
    grad_out_BD = torch.randn(B, D)
    v = values_BK.clone().requires_grad_()
    W = W_FD.clone().requires_grad_()
    out = sparse_decode(v, idx_BK, W)
    out.backward(grad_out_BD)

    v64 = values_BK.double().requires_grad_()
    W64 = W_FD.double().requires_grad_()
    ref = _dense_decode(v64, idx_BK, W64)
    ref.backward(grad_out_BD.double())
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v.grad.double(), v64.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(W.grad.double(), W64.grad, rtol=1e-5, atol=1e-5)
    # rows never selected get exactly zero gradient
    unused = torch.ones(F, dtype=torch.bool)
    unused[idx_BK.flatten()] = False
    assert unused.any() and W.grad[unused].abs().max() == 0


def test_sparse_decode_gradcheck_float64():
    values_BK, idx_BK, W_FD = _inputs(torch.float64, seed=1)
    assert torch.autograd.gradcheck(
        lambda v, w: sparse_decode(v, idx_BK, w), (values_BK.requires_grad_(), W_FD.requires_grad_())
    )


@pytest.mark.parametrize("precomputed", [True, False])
def test_gather_linear_matches_dense_reference(precomputed):
    g = torch.Generator().manual_seed(2)
    _, idx_BK, W_FD = _inputs(seed=2)
    x_BD = torch.randn(B, D, generator=g)
    b_F = torch.randn(F, generator=g)
    grad_BK = torch.randn(B, K, generator=g)
    x, W, b = (t.clone().requires_grad_() for t in (x_BD, W_FD, b_F))
    pre_BF = (x_BD @ W_FD.T + b_F) if precomputed else None
    out = gather_linear(x, W, b, idx_BK, pre_BF)
    out.backward(grad_BK)

    x64, W64, b64 = (t.double().requires_grad_() for t in (x_BD, W_FD, b_F))
    ref = (x64 @ W64.T + b64).gather(1, idx_BK)
    ref.backward(grad_BK.double())
    torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    for got, want in ((x.grad, x64.grad), (W.grad, W64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_chunked_paths_agree_with_unchunked(monkeypatch):
    import mmsae.sae.kernels as kernels

    values_BK, idx_BK, W_FD = _inputs(torch.float64, seed=3)
    grad_BD = torch.randn(B, D, dtype=torch.float64)
    full = kernels._scatter_rows(idx_BK, values_BK, grad_BD, F)
    monkeypatch.setattr(kernels, "_CHUNK_ELEMENTS", B * D)  # one K column per chunk
    torch.testing.assert_close(kernels._scatter_rows(idx_BK, values_BK, grad_BD, F), full)
    torch.testing.assert_close(
        kernels._gather_dot(idx_BK, W_FD, grad_BD), (W_FD[idx_BK] * grad_BD[:, None, :]).sum(-1)
    )


def test_gather_linear_with_a_shift_matches_dense_reference():
    """pre = (x − s)·Wᵀ + b at idx; s's gradient is formed as −(grad_b @ W), x's per token."""
    g = torch.Generator().manual_seed(4)
    _, idx_BK, W_FD = _inputs(seed=4)
    x_BD, s_D, b_F, grad_BK = (torch.randn(*shape, generator=g) for shape in ((B, D), (D,), (F,), (B, K)))
    for recompute in (True, False):
        x, s, W, b = (t.clone().requires_grad_() for t in (x_BD, s_D, W_FD, b_F))
        pre_BF = None if recompute else ((x_BD - s_D) @ W_FD.T + b_F)
        out = gather_linear(x, W, b, idx_BK, pre_BF, shift_D=s)
        out.backward(grad_BK)
        x64, s64, W64, b64 = (t.double().requires_grad_() for t in (x_BD, s_D, W_FD, b_F))
        ref = ((x64 - s64) @ W64.T + b64).gather(1, idx_BK)
        ref.backward(grad_BK.double())
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)
        for name, got, want in (("x", x, x64), ("shift", s, s64), ("W", W, W64), ("b", b, b64)):
            torch.testing.assert_close(got.grad.double(), want.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("n_cols,k", [(256, 4), (1024, 8), (4100, 16), (1002, 8), (64, 8)])
def test_topk_indices_is_torch_topk_up_to_ties(n_cols, k):
    """Grouped top-k (several levels for 256 and 1024 columns, plain for 1002 and 64) returns k
    distinct columns holding exactly torch.topk's values, also among many exact ties."""
    from mmsae.sae.kernels import topk_candidates, topk_indices

    g = torch.Generator().manual_seed(n_cols)
    # topk_candidates searches bf16 on its bits as int16: rows with negative values among their top k (few
    # positives, all negative, signed zeros, infinities) are the ones that must be searched again by value
    shift = torch.where(torch.arange(33)[:, None] % 2 == 0, 0.0, -2.5)
    special = torch.randn(33, n_cols, generator=g) - 1
    special[:, :3] = torch.tensor([-0.0, 0.0, -float("inf")])
    special[5, 7] = float("inf")
    for scores in (torch.randn(33, n_cols, generator=g), torch.randint(0, 12, (33, n_cols), generator=g).float(),
                   torch.randn(33, n_cols, generator=g).bfloat16(),
                   (torch.randn(33, n_cols, generator=g) + shift).bfloat16(),
                   (-torch.rand(33, n_cols, generator=g)).bfloat16(), special.bfloat16()):
        for search in (topk_indices, topk_candidates):
            idx = search(scores, k)
            assert idx.shape == (33, k) and idx.min() >= 0 and idx.max() < n_cols
            assert (idx.sort(1).values.diff(1) > 0).all()  # no column twice
            want = scores.topk(k, dim=1).values
            assert torch.equal(scores.gather(1, idx).sort(1, descending=True).values, want), search.__name__


def test_select_topk_from_bf16_product_picks_float32s_top_k_with_exact_values():
    from mmsae.sae.kernels import dense_preactivation, select_topk

    g = torch.Generator().manual_seed(5)
    Bx, Fx, Dx, k = 64, 512, 64, 8
    x_BD, s_D, W_FD, b_F = (torch.randn(*shape, generator=g) for shape in ((Bx, Dx), (Dx,), (Fx, Dx), (Fx,)))
    exact = (x_BD - s_D) @ W_FD.T + b_F
    low = dense_preactivation(x_BD, W_FD, b_F, torch.bfloat16, shift_D=s_D)
    assert low.dtype == torch.bfloat16
    plain = low.float().topk(k, dim=1).indices  # bf16's own choice differs on near-ties...
    want = exact.topk(k, dim=1)
    assert not torch.equal(plain.sort(1).values, want.indices.sort(1).values)
    W = W_FD.clone().requires_grad_()
    idx, pre = select_topk(x_BD, W, b_F, low, k, shift_D=s_D)  # ...the exact values settle them
    assert torch.equal(idx.sort(1).values, want.indices.sort(1).values)
    torch.testing.assert_close(pre.sort(1, descending=True).values, want.values, rtol=1e-5, atol=1e-5)
    pre.sum().backward()
    ref = torch.zeros(Fx, Dx).index_add_(0, idx.reshape(-1), (x_BD - s_D).repeat_interleave(k, 0))
    torch.testing.assert_close(W.grad, ref, rtol=1e-5, atol=1e-5)


def test_bf16_preactivation_rounds_the_biased_sum_once():
    """The bias rides in the bf16 product, so each value is the sum rounded once (within half a bf16 ulp
    of the exact sum of the bf16 inputs); a product rounded to bf16 and then added to the bias in bf16 is
    rounded twice and misses by up to a whole ulp."""
    from mmsae.sae.kernels import dense_preactivation

    g = torch.Generator().manual_seed(11)
    x_BD, s_D, W_FD = torch.randn(128, 96, generator=g), torch.randn(96, generator=g), torch.randn(256, 96, generator=g)
    b_F = 3 * torch.randn(256, generator=g)  # a bias as large as the products: double rounding shows
    low = dense_preactivation(x_BD, W_FD, b_F, torch.bfloat16, shift_D=s_D)
    rows = (x_BD - s_D).bfloat16().double()
    truth = rows @ W_FD.bfloat16().double().T + b_F.bfloat16().double()
    ulp = 2.0 ** (torch.frexp(truth.float()).exponent.double() - 8)  # bf16 keeps 8 significant bits
    big = truth.abs() > 1  # where float32's accumulation error is a small fraction of a bf16 ulp
    err = ((low.double() - truth).abs() / ulp)[big].max().item()
    assert err <= 0.55, err
    twice = (rows.bfloat16() @ W_FD.bfloat16().T).add_(b_F.bfloat16())
    assert ((twice.double() - truth).abs() / ulp)[big].max().item() > 0.6  # the test tells the two apart
