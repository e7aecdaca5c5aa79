"""kill -9 at many points of a harvest, rerun: the store equals an uninterrupted run's."""

import multiprocessing
import os
import signal

import pytest

from mmsae.store import HarvestConfig, harvest


def _die_at(target: str, n: int, out, model) -> None:
    """In a forked child: harvest, SIGKILLing ourselves at the n-th call of a chosen function:
    between a temp file and its rename (os.replace), inside a forward pass (capture), or while
    writing tensors. Forking skips re-importing torch/transformers (seconds on a loaded machine)."""
    from mmsae.models.base import Adapter
    from mmsae.store import files, shard

    calls = [0]

    def killer(orig):
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(*a, **k)

        return wrapped

    if target == "replace":
        files.os.replace = killer(os.replace)  # only this forked child's os module
    elif target == "capture":
        Adapter.capture = killer(Adapter.capture)
    elif target == "save":
        shard.save_file = killer(shard.save_file)
    harvest(_cfg(out, model))
    os._exit(0)


def _cfg(out, model):
    return HarvestConfig(out=str(out), model=str(model), layer=1, data="world:n=9,seed=1", records_per_shard=2,
                         batch_size=2, progress=False)


@pytest.fixture(scope="module")
def reference(llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    harvest(_cfg(out, llava_dir))
    return out


@pytest.mark.parametrize("target,n", [("replace", 1), ("replace", 6), ("capture", 4), ("save", 3),
                                      ("replace", 17)])
def test_kill_9_then_rerun_gives_the_same_store(reference, llava_dir, tmp_path, same_store, target, n):
    out = tmp_path / "store"
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_die_at, args=(target, n, out, llava_dir))
    child.start()
    child.join(300)
    assert child.exitcode == -signal.SIGKILL  # it really died mid-run
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
