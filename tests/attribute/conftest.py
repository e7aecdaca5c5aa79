"""Tiny random models of a few families, with eager attention (helpers: attribute_helpers)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def adapter_of(tiny_dir):
    """A shared float32 adapter per family; tests must not modify it (load a fresh one for that)."""
    from mmsae.models import load_adapter

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = load_adapter(tiny_dir(family))
            made[family].model.set_attn_implementation("eager")
        return made[family]

    return get
