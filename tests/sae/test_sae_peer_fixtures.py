"""Checkpoints written by the real sae-lens and eai-sparsify (see fixtures/make_fixtures.py),
loaded by mmsae and compared with the outputs the peers computed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmsae.sae import SAE
from mmsae.sae.formats import UnknownCheckpointError, list_hookpoints

FIX = Path(__file__).parent / "fixtures"
REF = load_file(str(FIX / "reference.safetensors"))
X = REF["x"]
# Loading our exports with the real peers needs their venv; importing sae-lens takes a minute on
# a busy 2-core machine, so this check runs only when MMSAE_PEERS_PYTHON names that interpreter.
PEERS_PYTHON = Path(os.environ.get("MMSAE_PEERS_PYTHON", "/nonexistent"))


def test_sparsify_release_layout_per_hookpoint():
    root = FIX / "sparsify_topk"
    assert list_hookpoints(root) == ["model.layers.3"]
    sae = SAE.from_pretrained(root, hookpoint="model.layers.3")
    assert (sae.cfg.kind, sae.cfg.k, sae.cfg.hook_layer) == ("topk", 4, 3)
    assert SAE.from_pretrained(root).cfg.hook_name == "model.layers.3"  # the only hookpoint
    with torch.no_grad():
        codes = sae.encode(X)
        xhat = sae.decode(codes)
    got = codes.to_dense()
    want = torch.zeros(8, 64).scatter(1, REF["sparsify_topk.indices"], REF["sparsify_topk.values"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xhat, REF["sparsify_topk.xhat"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,kind",
    [
        ("saelens_topk", "topk"),
        ("saelens_topk_rescaled", "topk"),
        ("saelens_standard", "relu"),
        ("saelens_jumprelu", "jumprelu"),
        ("saelens_batchtopk", "jumprelu"),
    ],
)
def test_saelens_checkpoints_match_saelens_outputs(name, kind):
    sae = SAE.from_pretrained(FIX / name)
    assert sae.cfg.kind == kind and sae.cfg.model == "tiny-llava" or name == "saelens_batchtopk"
    sae.eval()
    with torch.no_grad():
        codes = sae.encode(X).to_dense()
        xhat = sae.decode(sae.encode(X))
    torch.testing.assert_close(codes, REF[f"{name}.codes"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xhat, REF[f"{name}.xhat"], rtol=1e-5, atol=1e-5)


def test_rescaled_fixture_really_needs_the_rescale():
    cfg = json.loads((FIX / "saelens_topk_rescaled" / "cfg.json").read_text())
    assert cfg["rescale_acts_by_decoder_norm"] is True
    plain = load_file(str(FIX / "saelens_topk_rescaled" / "sae_weights.safetensors"))
    norms = plain["W_dec"].norm(dim=1)
    assert norms.max() / norms.min() > 1.5  # unequal norms, so ignoring the flag changes outputs


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(UnknownCheckpointError, match="not an mmsae"):
        SAE.from_pretrained(tmp_path)
    for hook in ("model.layers.1", "model.layers.2"):
        SAE.from_pretrained(FIX / "sparsify_topk").export_sparsify(tmp_path / "multi" / hook)
    with pytest.raises(UnknownCheckpointError, match="several hookpoints"):
        SAE.from_pretrained(tmp_path / "multi")


@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason="set MMSAE_PEERS_PYTHON to a python with sae-lens and eai-sparsify")
def test_exports_load_in_the_real_peers(tmp_path):
    torch.manual_seed(0)
    sae = SAE.from_pretrained(FIX / "saelens_topk_rescaled")
    sae.export_saelens(tmp_path / "lens")
    sae.export_sparsify(tmp_path / "spx")
    with torch.no_grad():
        want = sae.decode(sae.encode(X))
    torch.save({"x": X, "want": want}, tmp_path / "io.pt")
    script = (
        "import sys, torch, sae_lens, sparsify\n"
        "d = torch.load(sys.argv[1] + '/io.pt')\n"
        "a = sae_lens.SAE.load_from_disk(sys.argv[1] + '/lens')\n"
        "b = sparsify.SparseCoder.load_from_disk(sys.argv[1] + '/spx')\n"
        "with torch.no_grad():\n"
        "    torch.testing.assert_close(a(d['x']), d['want'], rtol=1e-5, atol=1e-5)\n"
        "    e = b.encode(d['x'])\n"
        "    torch.testing.assert_close(b.decode(e.top_acts, e.top_indices), d['want'], rtol=1e-5, atol=1e-5)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([str(PEERS_PYTHON), "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
