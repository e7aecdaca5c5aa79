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


def test_bf16_selection_picks_float32s_latents_with_exact_float32_values():
    sae = _sae()
    x = torch.randn(256, 16)
    ref = sae.encode(x)
    sae.selection_dtype = torch.bfloat16
    low = sae.encode(x)
    # bf16 only narrows the choice; exact values pick, so near-ties fall as in float32
    assert torch.equal(low.indices.sort(1).values, ref.indices.sort(1).values)
    torch.testing.assert_close(low.to_dense(), ref.to_dense(), rtol=1e-6, atol=1e-6)
    assert low.values.dtype == torch.float32


@pytest.mark.parametrize("selection_dtype", [None, torch.bfloat16])
def test_training_forward_gradients_match_dense_float64_reference(selection_dtype):
    """The training forward (x and b_dec enter the encoder separately, sparse backward) against
    the textbook dense computation of the same loss, in float64, at the same latents."""
    sae = _sae()
    sae.selection_dtype = selection_dtype
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
    x = torch.randn(48, 16) + 1.0
    out = sae(x)
    out.loss.backward()

    p64 = {n: p.detach().double().requires_grad_() for n, p in sae.named_parameters()}
    x64 = x.double()
    pre = (x64 - p64["b_dec"]) @ p64["W_enc"].T + p64["b_enc"]
    idx = out.codes.indices
    assert torch.equal(idx.sort(1).values, pre.topk(4, dim=1).indices.sort(1).values)
    z = torch.zeros_like(pre).scatter(1, idx, torch.relu(pre.gather(1, idx)))
    xhat = z @ p64["W_dec"] + p64["b_dec"]
    loss = ((xhat - x64) ** 2).sum() / ((x64 - x64.mean(0)) ** 2).sum()
    loss.backward()
    torch.testing.assert_close(out.loss.double(), loss.detach(), rtol=1e-5, atol=1e-6)
    for name, p in sae.named_parameters():
        torch.testing.assert_close(p.grad.double(), p64[name].grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_reuses_one_selection_buffer_and_eval_drops_it():
    sae = _sae().train()
    sae(torch.randn(32, 16))
    buf = sae._scratch_pre_BF
    assert buf.shape == (32, 64)
    out = sae(torch.randn(32, 16))
    assert sae._scratch_pre_BF is buf  # same shape: reused
    x = torch.randn(8, 16)
    out = sae(x)  # another batch size: a new buffer, and the results are still right
    assert sae._scratch_pre_BF.shape == (8, 64)
    torch.testing.assert_close(out.codes.to_dense(), sae.encode(x).to_dense())
    sae.eval()
    assert sae._scratch_pre_BF is None
    sae(x)
    assert sae._scratch_pre_BF is None
    assert "_scratch_pre_BF" not in sae.state_dict()
