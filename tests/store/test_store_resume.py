"""kill -9 at many points of a harvest, rerun: the store equals an uninterrupted run's."""

import os
import subprocess
import sys
import textwrap

import pytest

from mmsae.store import HarvestConfig, harvest

# Runs a harvest in a child that SIGKILLs itself at the n-th call of a chosen function: between a
# temp file and its rename (os.replace), inside a forward pass (capture), or while writing tensors.
CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    target, n = sys.argv[1], int(sys.argv[2])
    calls = [0]
    def killer(orig):
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(*a, **k)
        return wrapped
    import mmsae.store.files as files, mmsae.store.shard as shard
    from mmsae.models.base import Adapter
    if target == "replace":
        files.os.replace = killer(os.replace)
    elif target == "capture":
        Adapter.capture = killer(Adapter.capture)
    elif target == "save":
        shard.save_file = killer(shard.save_file)
    from mmsae.store import HarvestConfig, harvest
    harvest(HarvestConfig(out=sys.argv[3], model=sys.argv[4], layer=1, data="world:n=9,seed=1",
                          records_per_shard=2, batch_size=2, progress=False))
""")


def _cfg(out, model):
    return HarvestConfig(out=str(out), model=str(model), layer=1, data="world:n=9,seed=1", records_per_shard=2,
                         batch_size=2, progress=False)


@pytest.fixture(scope="module")
def reference(llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    harvest(_cfg(out, llava_dir))
    return out


@pytest.mark.parametrize("target,n", [("replace", 1), ("replace", 5), ("capture", 4), ("save", 3),
                                      ("replace", 17)])
def test_kill_9_then_rerun_gives_the_same_store(reference, llava_dir, tmp_path, same_store, target, n):
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, target, str(n), str(out), str(llava_dir)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # it really died mid-run
    assert not (out / "manifest.json").exists()
    harvest(_cfg(out, llava_dir))
    same_store(reference, out)
    assert not list(out.rglob(".*.tmp-*"))


def test_rerun_of_a_finished_store_changes_nothing(reference, llava_dir, tmp_path, same_store):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    harvest(_cfg(copy, llava_dir))
    same_store(reference, copy)
