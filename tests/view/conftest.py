"""The viewer's fixtures: a small world index with explanations (one of them a script) and scores, a tiny
LLaVA with a fresh TopK SAE for the image page, and a TestClient that speaks as localhost."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402
from view_helpers import TOKEN, add_explanations_and_scores  # noqa: E402


def pytest_configure(config):
    """With MMSAE_INSTALL_BROWSER=1 (CI), install Debian's chromium and playwright when missing, through
    .ci/setup-browser.sh (apt and pip only, no browser download); otherwise the browser tests skip."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[2] / ".ci" / "setup-browser.sh"
    if os.environ.get("MMSAE_INSTALL_BROWSER") == "1" and not Path("/usr/bin/chromium").exists():
        subprocess.run(["bash", str(script)], check=True, env={**os.environ, "PYTHON": sys.executable})


@pytest.fixture(scope="session")
def model_and_sae(tmp_path_factory):
    import torch

    from mmsae.models.tiny import build_llava
    from mmsae.sae import SAE, SAEConfig

    root = tmp_path_factory.mktemp("model")
    # 6 blocks: the index's layer 3 is then a middle one, so image tokens reach the read-out through the
    # blocks above it (at the last block only the read position does, and attribution to patches is 0)
    model = build_llava(root / "llava", image_size=32, patch=8, layers=6)
    torch.manual_seed(0)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=32, n_latents=16, k=4))
    sae.save_pretrained(root / "sae")
    return str(model), str(root / "sae")


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, model_and_sae):
    eye = np.eye(8, dtype=np.float32)
    maps = {3: concept_feature(0, 12, "red", top=3), 5: [(4, eye * 2.0), (2, eye)], 6: [(4, np.triu(eye + 1))],
            7: [(1, eye[::-1] * 1.5)]}
    d = world_index(tmp_path_factory.mktemp("view") / "idx", maps, n=12, text_only=(9,))
    add_explanations_and_scores(d)
    return d


@pytest.fixture(scope="session")
def app(index_dir, model_and_sae):
    from mmsae.view.app import ViewConfig, build_app

    model, sae = model_and_sae
    return build_app(ViewConfig(index=str(index_dir), model=model, sae=sae, token=TOKEN, device="cpu"))


@pytest.fixture
def client(app):
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://localhost:8765", raise_server_exceptions=False) as c:
        yield c
