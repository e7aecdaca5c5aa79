"""mmsae's own format, atomic saves, folding the normalisation, exports round-tripping."""

import json

import pytest
import torch

from mmsae.sae import SAE, SAEConfig, SAEConfigError
from mmsae.sae.formats import detect_format


def _trained_like(kind):
    torch.manual_seed(0)
    cfg = SAEConfig(kind=kind, d_in=16, n_latents=64, k=4, hook_layer=24, hook_name="model.layers.24", model="tiny")
    sae = SAE.from_config(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.add_(0.1 * torch.randn_like(p))
        if kind == "batchtopk":
            sae.threshold.fill_(0.05)
    return sae.eval()


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu", "jumprelu"])
def test_own_format_round_trip(tmp_path, kind):
    sae = _trained_like(kind)
    sae.save_pretrained(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "config.json").read_text())
    assert cfg["format"] == "mmsae" and cfg["kind"] == kind and cfg["hook_layer"] == 24
    back = SAE.from_pretrained(tmp_path / "sae").eval()
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.decode(back.encode(x)), sae.decode(sae.encode(x)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu", "jumprelu"])
def test_saelens_export_round_trip(tmp_path, kind):
    sae = _trained_like(kind)
    sae.export_saelens(tmp_path / "lens")
    assert detect_format(tmp_path / "lens") == "saelens"
    back = SAE.from_pretrained(tmp_path / "lens").eval()
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.decode(back.encode(x)), sae.decode(sae.encode(x)), rtol=1e-6, atol=1e-6)


def test_folding_the_norm_scale_gives_raw_space_outputs():
    sae = _trained_like("topk")
    s = 0.37
    x = 3.0 * torch.randn(6, 16)
    folded = sae.folded(s)
    assert folded.cfg.norm_scale == pytest.approx(s) and folded.cfg.folded
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x).to_dense(), sae.encode(s * x).to_dense(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(folded.decode(folded.encode(x)), sae.decode(sae.encode(s * x)) / s, rtol=1e-5, atol=1e-5)


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    import mmsae.sae.formats as formats

    good = _trained_like("topk")
    good.save_pretrained(tmp_path / "sae")
    before = (tmp_path / "sae" / "sae.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(formats, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        _trained_like("relu").save_pretrained(tmp_path / "sae")
    assert (tmp_path / "sae" / "sae.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]  # no temp folders left behind


def test_shape_mismatch_in_checkpoint_is_clear(tmp_path):
    sae = _trained_like("topk")
    sae.save_pretrained(tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "config.json").read_text())
    cfg["d_in"] = 32
    (tmp_path / "sae" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SAEConfigError, match="W_enc has shape"):
        SAE.from_pretrained(tmp_path / "sae")
