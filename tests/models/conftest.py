import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def adapter_of(tiny_dir):
    from mmsae.models import load_adapter

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = load_adapter(tiny_dir(family))
        return made[family]

    return get


@pytest.fixture
def marker_check():
    from geometry_checks import check_marker_geometry

    return check_marker_geometry
