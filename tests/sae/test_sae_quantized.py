"""Int8 selection: its error bound holds, and the certified top k is float32's on any data."""

import pytest
import torch

from mmsae.sae import SAE, SAEConfig
from mmsae.sae.quantized import Int8Product, certified_topk, int8_available, int8_preactivation, int8_speedup

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no CPU int8 product")


def _problem(B=256, D=64, F=1024, outliers=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(B, D, generator=g)
    if outliers:  # LLM residuals: a few huge dimensions blow up the per-row int8 scale
        rows[:, :3] *= 80.0
    W = torch.randn(F, D, generator=g) / D**0.5
    b = 0.1 * torch.randn(F, generator=g)
    return rows, W, b


def _assert_float32_topk(rows, W, b, idx_BK, exact_BK, k):
    pre = rows.double() @ W.double().T + b.double()
    ref_BK = pre.topk(k, dim=1).indices
    got, want = idx_BK.sort(1).values, ref_BK.sort(1).values
    differ = (got != want).any(1)
    # a differing row is allowed only where the k-th and (k+1)-th values tie within fp32 rounding
    top2 = pre.topk(k + 1, dim=1).values
    gap = top2[:, k - 1] - top2[:, k]
    assert (gap[differ] < 1e-5 * pre.abs().amax(1)[differ]).all(), int(differ.sum())
    torch.testing.assert_close(exact_BK.double(), pre.gather(1, idx_BK), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outliers", [False, True])
def test_error_bound_holds_for_every_latent(outliers):
    rows, W, b = _problem(outliers=outliers)
    product = int8_preactivation(rows, W, b)
    approx, err = product.approx(), product.err_B
    exact = rows.double() @ W.double().T + b.double()
    excess = (approx.double() - exact).abs() - err.double()[:, None]
    assert excess.max() <= 0
    assert (err > 0).all() and product.acc_BF.dtype == torch.int32 and (product.scale_B > 0).all()
    if not outliers:  # the bias rides in the product: without it every latent would be off by its b
        assert (approx.double() - exact).abs().max() < 0.5 * b.abs().max()


def test_preactivation_into_a_reused_buffer_equals_a_fresh_one():
    rows, W, b = _problem()
    fresh = int8_preactivation(rows, W, b)
    buf = torch.empty(rows.shape[0], W.shape[0], dtype=torch.int32)
    into = int8_preactivation(rows, W, b, out=buf)
    assert into.acc_BF.data_ptr() == buf.data_ptr()
    assert torch.equal(into.acc_BF, fresh.acc_BF) and torch.equal(into.err_B, fresh.err_B)


@pytest.mark.parametrize("outliers", [False, True])
@pytest.mark.parametrize("margin", [0, 4, 64])
def test_certified_topk_is_float32s_whatever_the_margin(outliers, margin):
    """A small margin only makes rows fall back to float32; the answer never changes."""
    k = 16
    rows, W, b = _problem(outliers=outliers)
    idx, exact, n_fallback = certified_topk(rows, W, b, int8_preactivation(rows, W, b), k, margin)
    _assert_float32_topk(rows, W, b, idx, exact, k)
    if margin == 0:
        assert n_fallback > 0  # k candidates certify only if the bound is far below every gap
    assert 0 <= n_fallback <= rows.shape[0]


def test_certificate_rejects_a_row_whose_true_top_k_lies_outside_the_candidates():
    """An approximation that is wrong within its stated bound: the row must fall back."""
    k, F = 4, 64
    rows, W, b = _problem(B=1, D=16, F=F)
    exact = (rows @ W.T + b)
    acc = (exact * 1000).round().int()  # a product of scale 1e-3 ...
    true_top = exact.topk(k, dim=1).indices[0]
    acc[0, true_top] -= 10_000  # ... that pushes the true winners out of the candidates ...
    product = Int8Product(acc, torch.tensor([1e-3]), torch.tensor([10.5]))  # ... by less than the bound claims
    idx, _, n_fallback = certified_topk(rows, W, b, product, k, margin=4)
    assert n_fallback == 1
    assert set(idx[0].tolist()) == set(true_top.tolist())


def test_topk_sae_int8_selection_matches_float32_and_trains_the_same_gradients():
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=32, n_latents=512, k=8))
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    x = torch.randn(128, 32) + 1.0
    dead = torch.zeros(512, dtype=torch.bool)
    # AuxK on, with fewer dead latents than k_aux (16): all of them are picked whatever the
    # product's precision, so the aux loss matches only if their values are exact, not int8's
    dead[::52] = True
    ref = sae(x, dead_mask_F=dead)
    ref.loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    sae.selection_dtype = torch.int8
    out = sae(x, dead_mask_F=dead)
    out.loss.backward()
    assert torch.equal(out.codes.indices.sort(1).values, ref.codes.indices.sort(1).values)
    torch.testing.assert_close(out.codes.to_dense(), ref.codes.to_dense(), rtol=1e-5, atol=1e-6)
    assert out.aux_loss > 0
    torch.testing.assert_close(out.aux_loss, ref.aux_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], rtol=1e-4, atol=1e-6, msg=name)
    stats = sae.selection_stats
    assert stats["rows"] == 128 and 0 <= stats["fallback_rows"] <= 128 and stats["margin"] >= 32


def test_many_fallbacks_widen_the_margin():
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=32, n_latents=512, k=8))
    sae.selection_dtype = torch.int8
    sae.int8_margin = 1  # too narrow to certify most rows
    x = torch.randn(64, 32)
    sae.encode(x)
    assert sae.selection_stats["fallback_rows"] * 16 > 64 and sae.int8_margin == 2


def test_bad_inputs_name_the_value():
    rows, W, b = _problem(B=4, D=8, F=32)
    with pytest.raises(ValueError, match="d_in < 133"):
        int8_preactivation(torch.zeros(2, 140_000), torch.zeros(3, 140_000), torch.zeros(3))
    with pytest.raises(ValueError, match="device meta"):
        int8_preactivation(rows.to("meta"), W, b)


def test_speedup_probe_is_a_positive_ratio_and_cached():
    s = int8_speedup(64, 1024, 1)
    assert s > 0 and int8_speedup(64, 1024, 1) == s
    assert int8_speedup(140_000, 1024, 1) == 0.0  # beyond the int32 accumulator: never chosen
