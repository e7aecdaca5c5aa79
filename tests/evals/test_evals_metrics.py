"""Streaming per-modality metrics against direct float64 computations on the pooled data."""

import numpy as np
import pytest
import torch

from mmsae.evals import ReconstructionMetrics, SpliceMetrics, ce_loss_recovered, evaluate_sae, format_table
from mmsae.sae import SAE, SAEConfig
from mmsae.sae.codes import Codes


def _data(n=300, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2 + 10.0  # big offset: centring matters
    xhat = x + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    mod = torch.randint(0, 3, (n,), generator=g).numpy()
    vals = torch.relu(torch.randn(n, 20, generator=g, dtype=torch.float64))
    return x, xhat, mod, vals


def _direct(x, xhat, vals):
    fvu = ((x - xhat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    cos = torch.nn.functional.cosine_similarity(x, xhat, dim=1).mean()
    ratio = (xhat.norm(dim=1) / x.norm(dim=1)).mean()
    l0 = (vals != 0).sum(1).double().mean()
    dead = ((vals != 0).sum(0) == 0).double().mean()
    return dict(fvu=float(fvu), cosine=float(cos), l2_ratio=float(ratio), l0=float(l0), dead_fraction=float(dead))


def test_streamed_metrics_equal_pooled_direct_computation_per_split():
    x, xhat, mod, vals = _data()
    acc = ReconstructionMetrics(20)
    for lo, hi in ((0, 7), (7, 150), (150, 151), (151, 300)):  # uneven batches
        acc.update(x[lo:hi], xhat[lo:hi], Codes(vals[lo:hi], None, 20), mod[lo:hi])
    got = acc.compute()
    masks = {"all": mod != 2, "text": mod == 0, "image": mod == 1}
    for split, m in masks.items():
        m = torch.from_numpy(m)
        want = _direct(x[m], xhat[m], vals[m])
        assert got[split]["n_tokens"] == int(m.sum())
        for key, value in want.items():
            assert got[split][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (split, key)


def test_string_modalities_and_sparse_codes_give_the_same_result():
    x, xhat, mod, vals = _data(seed=1)
    idx = vals.topk(3, dim=1).indices
    sparse = Codes(vals.gather(1, idx), idx, 20)
    a, b = ReconstructionMetrics(20), ReconstructionMetrics(20)
    a.update(x, xhat, sparse, mod)
    b.update(x, xhat, Codes(sparse.to_dense(), None, 20), np.array(["text", "image", "special"])[mod])
    assert a.compute() == b.compute()
    with pytest.raises(ValueError, match="unknown modality"):
        b.update(x[:2], xhat[:2], Codes(vals[:2], None, 20), ["text", "audio"])


def test_splice_metrics_match_direct_cross_entropy():
    g = torch.Generator().manual_seed(0)
    clean, sae, zero = (torch.randn(2, 5, 11, generator=g) for _ in range(3))
    labels = torch.randint(0, 11, (2, 5), generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 1]], dtype=torch.bool)
    acc = SpliceMetrics()
    acc.update(clean, sae, labels, mask, split="image", zero_BSV=zero)
    r = acc.compute()["image"]
    ce = lambda lg: torch.nn.functional.cross_entropy(lg[mask].double(), labels[mask]).item()  # noqa: E731
    assert r["ce_clean"] == pytest.approx(ce(clean)) and r["ce_sae"] == pytest.approx(ce(sae))
    assert r["delta_lm_loss"] == pytest.approx(ce(sae) - ce(clean))
    assert r["ce_loss_recovered_zero"] == pytest.approx((ce(zero) - ce(sae)) / (ce(zero) - ce(clean)))
    same = SpliceMetrics()
    same.update(clean, clean, labels, mask)
    assert same.compute()["all"]["kl_sae"] == pytest.approx(0.0, abs=1e-12)
    assert ce_loss_recovered(2.0, 2.0, 5.0) == 1.0 and ce_loss_recovered(2.0, 5.0, 5.0) == 0.0


def test_evaluate_sae_caps_tokens_drops_nonfinite_rows_and_formats():
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=8, n_latents=32, k=3))
    x = torch.randn(100, 8)
    x[5, 0] = float("nan")
    mod = np.zeros(100, np.int8)
    mod[50:] = 1
    report = evaluate_sae(sae, [(x[:60], mod[:60]), (x[60:], mod[60:])], max_tokens=80)
    m = report["metrics"]
    assert m["all"]["n_tokens"] == 79 and m["text"]["n_tokens"] == 49 and m["image"]["n_tokens"] == 30
    assert m["all"]["l0"] <= 3 and report["nonfinite_rows_dropped"] == 1
    table = format_table(report)
    assert "image" in table and "fvu" in table
    with pytest.raises(ValueError, match="width 4 does not match"):
        evaluate_sae(sae, [torch.randn(3, 4)])
