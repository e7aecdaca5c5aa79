"""TopK SAE: init, sparsity, decoder constraint, AuxK, clear errors."""

import pytest
import torch

from mmsae.sae import SAE, SAEConfig, SAEConfigError, geometric_median


def _sae(**kw):
    torch.manual_seed(0)
    return SAE.from_config(SAEConfig(kind="topk", d_in=16, n_latents=64, k=4, **kw))


def test_init_encoder_is_decoder_transpose_with_unit_rows():
    sae = _sae()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    enc_norms = sae.W_enc.detach().norm(dim=1, keepdim=True)
    torch.testing.assert_close(sae.W_enc / enc_norms, sae.W_dec)  # same directions
    assert 0.4 < float(enc_norms.mean()) < 0.75  # U(±1/√d) rows: ≈ 1/√3
    assert sae.b_enc.abs().max() == 0


def test_encode_keeps_exactly_k_nonnegative_latents_matching_dense_formula():
    sae = _sae()
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    x = torch.randn(20, 16)
    codes = sae.encode(x)
    assert codes.values.shape == (20, 4) and codes.indices.shape == (20, 4)
    assert (codes.values >= 0).all()
    pre = (x - sae.b_dec) @ sae.W_enc.T + sae.b_enc
    ref = torch.relu(pre).topk(4, dim=1)
    torch.testing.assert_close(codes.to_dense().detach(), torch.zeros(20, 64).scatter(1, ref.indices, ref.values))
    xhat = sae.decode(codes)
    torch.testing.assert_close(xhat, codes.to_dense() @ sae.W_dec + sae.b_dec)


def test_forward_fvu_is_mean_centred():
    sae = _sae()
    x = torch.randn(32, 16) + 5.0  # a large offset: variance about zero would be ~26x too big
    out = sae(x)
    xhat = out.xhat_BD.detach()
    want = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    torch.testing.assert_close(out.fvu, want.to(out.fvu.dtype))


def test_parallel_gradient_removed_and_rows_renormalised():
    sae = _sae()
    x = torch.randn(32, 16)
    sae(x).loss.backward()
    sae.remove_gradient_parallel_to_decoder_directions()
    dots = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert dots.abs().max() < 1e-6
    with torch.no_grad():
        sae.W_dec.add_(0.5 * torch.randn_like(sae.W_dec))
    sae.after_optimizer_step()
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))


def test_auxk_only_with_dead_latents_and_reaches_only_dead_rows():
    sae = _sae()
    x = torch.randn(32, 16)
    assert sae(x).aux_loss.item() == 0.0
    assert sae(x, dead_mask_F=torch.zeros(64, dtype=torch.bool)).aux_loss.item() == 0.0
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:10] = True
    out = sae(x, dead_mask_F=dead)
    assert out.aux_loss.item() > 0
    sae.zero_grad()
    out.aux_loss.backward()
    assert sae.W_enc.grad[~dead].abs().max() == 0  # aux reaches only dead latents' encoder rows
    assert sae.W_enc.grad[dead].abs().max() > 0
    assert SAEConfig(kind="topk", d_in=16, n_latents=64, k=4).auxk_alpha > 0  # on by default


def test_geometric_median_resists_outliers():
    pts = torch.zeros(101, 3, dtype=torch.float64)
    pts[:, 0] = torch.linspace(-1, 1, 101)
    pts[:10] += 1000.0
    med = geometric_median(pts)
    assert med.norm() < 1.0 < pts.mean(0).norm()


def test_clear_errors_for_k_and_width():
    with pytest.raises(SAEConfigError, match="k = 64 must be smaller"):
        SAEConfig(kind="topk", d_in=16, n_latents=64, k=64)
    with pytest.raises(SAEConfigError, match="unknown SAE kind"):
        SAEConfig(kind="gated", d_in=16, n_latents=64)
    sae = _sae()
    with pytest.raises(SAEConfigError, match="input width 8 does not match"):
        sae.encode(torch.randn(3, 8))


def test_bf16_selection_keeps_exact_float32_values():
    sae = _sae()
    x = torch.randn(64, 16)
    ref = sae.encode(x)
    sae.selection_dtype = torch.bfloat16
    low = sae.encode(x)
    same = (ref.indices.sort(1).values == low.indices.sort(1).values).all(1)
    assert same.float().mean() > 0.9  # only near-ties may differ
    # wherever the same latents were picked, the values are the float32 ones, not bf16-rounded
    torch.testing.assert_close(low.to_dense()[same], ref.to_dense()[same], rtol=1e-6, atol=1e-6)
    assert low.values.dtype == torch.float32
