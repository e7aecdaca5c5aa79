import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from steer_helpers import random_sae  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def adapter_of(tiny_dir):
    """A tiny random model of a family (tests/conftest.py's tiny_dir), loaded once per session."""
    from mmsae.models import load_adapter

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = load_adapter(tiny_dir(family))
        return made[family]

    return get


@pytest.fixture(scope="session")
def sae_of(adapter_of):
    made = {}

    def get(family: str):
        if family not in made:
            made[family] = random_sae(adapter_of(family).d_model)
        return made[family]

    return get
