"""ReLU+L1 (SAE-V), BatchTopK and JumpReLU against their definitions."""

import torch

from mmsae.sae import SAE, SAEConfig


def test_relu_l1_is_weighted_by_decoder_norms():
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="relu", d_in=8, n_latents=32, l1_coefficient=3.0))
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2.0, 32)[:, None])
    x = torch.randn(10, 8)
    out = sae(x)
    z = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    recon = ((z @ sae.W_dec + sae.b_dec - x) ** 2).sum(1).mean()
    l1 = (z * sae.W_dec.norm(dim=1)).sum(1).mean()
    torch.testing.assert_close(out.recon_loss, recon)
    torch.testing.assert_close(out.sparsity_loss, 3.0 * l1)
    assert not out.codes.is_sparse
    assert SAEConfig(kind="relu", d_in=8, n_latents=32).l1_coefficient == 5.0  # SAE-V default


def test_batchtopk_keeps_batch_times_k_and_learns_a_threshold():
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="batchtopk", d_in=8, n_latents=32, k=3))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # all pre-activations positive enough: exactly B·k survive
    x = torch.randn(12, 8)
    sae.train()
    out = sae(x)
    dense = out.codes.to_dense()
    assert int((dense > 0).sum()) == 12 * 3
    assert out.codes.active_B().float().std() > 0  # rows differ in count, unlike TopK
    relu = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc).detach()
    kept = dense.detach() > 0
    assert relu[kept].min() >= relu[~kept].max()
    thr = float(sae.threshold)
    assert thr == float(relu[kept].min())
    sae.eval()
    z = sae.encode(x).values
    torch.testing.assert_close(z, relu * (relu > thr))


def test_jumprelu_forward_and_pseudo_derivative():
    torch.manual_seed(0)
    eps = 0.5
    cfg = SAEConfig(kind="jumprelu", d_in=8, n_latents=16, jumprelu_init_threshold=0.3, jumprelu_bandwidth=eps, l1_coefficient=2.0)
    sae = SAE.from_config(cfg)
    x = torch.randn(64, 8)
    pre = ((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc).detach()
    z = sae.encode(x).values
    torch.testing.assert_close(z.detach(), torch.relu(pre) * (pre > 0.3))
    # d(L0 penalty)/dθ = −λ/ε · Σ_b rect((pre−θ)/ε) / B  (then ·θ for the log parametrisation)
    out = sae(x)
    sae.zero_grad()
    out.sparsity_loss.backward()
    theta = sae.threshold.detach()
    rect = (((pre - theta) / eps).abs() < 0.5).double()
    want = (-(2.0 / eps) * rect.sum(0) / 64) * theta.double()
    torch.testing.assert_close(sae.log_threshold.grad.double(), want, rtol=1e-5, atol=1e-6)


def test_codes_count_fired_tokens_the_same_sparse_and_dense():
    from mmsae.sae.codes import Codes

    values = torch.tensor([[2.0, 0.0, 1.0], [0.5, 3.0, 0.0]])  # a zero value is padding: not fired
    indices = torch.tensor([[4, 1, 0], [4, 2, 1]])
    sparse = Codes(values, indices, 6)
    assert sparse.fired_F().tolist() == [1, 0, 1, 0, 2, 0]
    assert Codes(sparse.to_dense(), None, 6).fired_F().tolist() == [1, 0, 1, 0, 2, 0]
    assert sparse.active_B().tolist() == [2, 2]
