import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    from mmsae.models.tiny import build_llava

    return build_llava(tmp_path_factory.mktemp("llava"))


def compare_stores(a, b, ignore_created_by: bool = True) -> None:
    """Two stores hold byte-identical shards, tables, rejects and (but for provenance) manifests."""
    import json
    from pathlib import Path

    a, b = Path(a), Path(b)
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel == "manifest.json":
            ma, mb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
            if ignore_created_by:
                ma.pop("created_by"), mb.pop("created_by")
            assert ma == mb
        elif rel == "config.json":  # the resolved config: the same but for where each store lives and how
            ca, cb = json.loads((a / rel).read_text()), json.loads((b / rel).read_text())
            assert ca.pop("out") == str(a) and cb.pop("out") == str(b)
            # the speed knobs, not part of the store's identity (HarvestConfig.identity): any value, same bytes
            for knob in ("workers", "streams", "write_queue"):
                ca.pop(knob, None), cb.pop(knob, None)
            assert ca == cb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture
def same_store():
    return compare_stores
