"""TopKSAE.encode_exact: the same codes for every selection dtype (the index relies on it)."""

import torch

from mmsae.sae import SAE, SAEConfig


def _sae(n_latents=512, k=16):
    torch.manual_seed(0)
    return SAE.from_config(SAEConfig(kind="topk", d_in=32, n_latents=n_latents, k=k)).eval()


def test_encode_exact_is_the_same_for_every_selection_dtype_and_close_to_encode():
    sae = _sae()
    x = torch.randn(300, 32) * 3
    x[7] = x[8]  # a repeated row (as a BOS token is): the same codes
    want = sae.encode_exact(x)
    assert torch.equal(want.indices, want.indices.sort(1).values)
    assert torch.equal(want.indices[7], want.indices[8])
    ref = sae.encode(x)
    torch.testing.assert_close(want.to_dense(), ref.to_dense(), rtol=1e-5, atol=1e-5)
    for dtype, margin in ((torch.bfloat16, None), (torch.int8, None), (torch.int8, 1)):
        sae.selection_dtype, sae.int8_margin, sae.selection_stats = dtype, margin, None
        got = sae.encode_exact(x)
        assert torch.equal(got.indices, want.indices) and torch.equal(got.values, want.values), (dtype, margin)
    assert sae.selection_stats["fallback_rows"] > 0  # margin 1: the uncertified rows took every latent


def test_encode_exact_breaks_exact_ties_by_the_lower_latent():
    sae = _sae(n_latents=64, k=1)
    with torch.no_grad():
        sae.W_enc[40] = sae.W_enc[3]  # latents 3 and 40 always tie
        sae.b_enc.zero_()
        x = sae.W_enc[3:4].clone() * 10 + sae.b_dec  # along latent 3: it and 40 are the best
    for dtype in (None, torch.bfloat16, torch.int8):
        sae.selection_dtype = dtype
        assert sae.encode_exact(x).indices.tolist() == [[3]]


def test_encode_exact_reuses_its_product_buffer_and_sees_weight_changes():
    """The [B, F] buffer and the bias-augmented encoder are kept between calls: a smaller batch after a
    larger one, and weights changed in place (a training step), still give fresh, exact codes."""
    sae = _sae()
    x = torch.randn(300, 32) * 3
    first = sae.encode_exact(x)
    small = sae.encode_exact(x[:50])  # a view of the larger buffer
    assert torch.equal(small.indices, first.indices[:50]) and torch.equal(small.values, first.values[:50])
    with torch.no_grad():
        sae.W_enc.mul_(-1)  # in place: the same storage, a new version
        sae.b_enc.add_(0.5)
    flipped = sae.encode_exact(x)
    fresh = _sae()
    with torch.no_grad():
        fresh.W_enc.copy_(sae.W_enc)
        fresh.b_enc.copy_(sae.b_enc)
    want = fresh.encode_exact(x)
    assert torch.equal(flipped.indices, want.indices) and torch.equal(flipped.values, want.values)
    assert not torch.equal(flipped.indices, first.indices)
    sae.train()
    assert sae._inference_buf is None and sae._inference_encoder is None  # a training SAE holds neither
