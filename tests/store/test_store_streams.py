"""Forward streams (`forwards`): batches come back in order, several forwards run at once in their own
threads, at most `streams` in flight, and a store or an index made with streams is the same bytes."""

import threading
import time

import pytest
import torch

from mmsae.store import HarvestConfig, harvest
from mmsae.store import stream
from mmsae.store.stream import MAX_AUTO_STREAMS, forwards, resolve_streams


def test_forwards_keep_order_and_bound_the_batches_in_flight(monkeypatch):
    lock, state = threading.Lock(), {"running": 0, "most": 0, "threads": set()}

    def slow_forward(adapter, prepared, layer):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["threads"].add((threading.get_ident(), torch.get_num_threads()))
        time.sleep(0.02 * (5 - prepared % 5))  # later batches finish first
        with lock:
            state["running"] -= 1
        return [prepared * 10]

    monkeypatch.setattr(stream, "forward", slow_forward)
    got = list(forwards(None, [("a", i) for i in range(12)], 1, streams=3))
    assert got == [("a", i, [i * 10]) for i in range(12)]
    assert state["most"] == 3  # three at once, never more
    assert len(state["threads"]) == 3 and all(t == max(1, torch.get_num_threads() // 3) for _, t in state["threads"])
    state["threads"].clear()
    assert list(forwards(None, [("b", 2)], 1, streams=1)) == [("b", 2, [20])]
    assert state["threads"] == {(threading.get_ident(), torch.get_num_threads())}  # in the caller's thread


def test_a_failing_forward_is_raised_in_order(monkeypatch):
    def forward(adapter, prepared, layer):
        if prepared == 4:
            raise RuntimeError("forward failed on batch 4")
        return [prepared]

    monkeypatch.setattr(stream, "forward", forward)
    got = []
    with pytest.raises(RuntimeError, match="batch 4"):
        for item in forwards(None, [(i,) for i in range(8)], 1, streams=2):
            got.append(item)
    assert got == [(i, [i]) for i in range(4)]


def test_resolve_streams():
    threads = torch.get_num_threads()
    assert resolve_streams(None, "cpu") == max(1, min(MAX_AUTO_STREAMS, threads))
    assert resolve_streams(None, "cuda:0") == 1 and resolve_streams(3, "cpu") == 3
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="streams must be an integer >= 1"):
            resolve_streams(bad, "cpu")
    with pytest.raises(ValueError, match="streams"):
        harvest(HarvestConfig(out="/nonexistent/never-made", layer=1, streams=0))


def test_streams_give_the_same_store(llava_dir, tmp_path, same_store):
    cfg = dict(layer=1, data="world:n=14,seed=2", records_per_shard=6, batch_size=2, progress=False, workers=0)
    harvest(HarvestConfig(out=str(tmp_path / "s1"), model=str(llava_dir), streams=1, **cfg))
    harvest(HarvestConfig(out=str(tmp_path / "s3"), model=str(llava_dir), streams=3, **cfg))
    same_store(tmp_path / "s1", tmp_path / "s3")
