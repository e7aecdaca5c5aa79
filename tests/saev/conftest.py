"""Shared fixtures for the SAE-V tests: the zoo subject and a random TopK SAE on its layer 3."""

from __future__ import annotations

import pytest
import torch

from mmsae.sae import SAE, SAEConfig

PROMPT = "<s> user : <image> {caption}"


def make_sae(path, n_latents=256, k=16, seed=0, kind="topk"):
    torch.manual_seed(seed)
    extra = {"k": k} if kind == "topk" else {"l1_coefficient": 1.0}
    sae = SAE.from_config(SAEConfig(kind=kind, d_in=128, n_latents=n_latents, hook_layer=3, **extra))
    sae.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def sae_dir(tmp_path_factory):
    return make_sae(tmp_path_factory.mktemp("sae") / "sae")


@pytest.fixture(scope="session")
def relu_sae_dir(tmp_path_factory):
    """A ReLU SAE: its L0 varies per token (a TopK SAE's is k everywhere, so l0 refuses it)."""
    return make_sae(tmp_path_factory.mktemp("sae_relu") / "sae", kind="relu")


@pytest.fixture(scope="session")
def relu_sae(relu_sae_dir):
    return SAE.from_pretrained(relu_sae_dir).eval()


@pytest.fixture(scope="session")
def subject():
    from mmsae.defaults import zoo_model_dir
    from mmsae.models import load_adapter

    torch.set_num_threads(1)
    return load_adapter(str(zoo_model_dir("subject")), device="cpu")


@pytest.fixture(scope="session")
def sae(sae_dir):
    return SAE.from_pretrained(sae_dir).eval()


@pytest.fixture(scope="session")
def records():
    from mmsae.data import open_source

    src = open_source("world:n=6,seed=3", prompt=PROMPT)
    return [src.record(i) for i in range(len(src))]
