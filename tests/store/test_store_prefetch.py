"""Loading/encoding in data-loader workers and writing in a background thread: the same bytes as in
process, bad records named and skipped as before, bounded queues, errors that surface."""

import json
import os
import threading
import time

import pytest
import torch
from PIL import Image

from mmsae.data import Record
from mmsae.store import HarvestConfig, harvest
from mmsae.store.background import Background
from mmsae.store.prefetch import PREFETCH, default_workers, plan, prepared_batches, resolve_workers
from mmsae.store.stream import capture_batches


def _jsonl(root):
    """Good records with one of each bad kind: malformed line, placeholder mismatch, too long."""
    Image.new("RGB", (40, 30), "red").save(root / "r.png")
    Image.new("RGB", (20, 50), "blue").save(root / "b.png")
    conv = lambda v: [{"from": "human", "value": v}]  # noqa: E731
    lines = [json.dumps({"id": f"ok{i}", "image": ("r.png", "b.png")[i % 2], "conversations": conv(
        "<image> what colour" + " is the image" * (i % 3))}) for i in range(9)]
    lines.insert(2, "{broken")
    lines.insert(5, json.dumps({"id": "two", "image": "r.png", "conversations": conv("<image> <image> one image")}))
    lines.insert(7, json.dumps({"id": "long", "image": "r.png", "conversations": conv("<image> " + "red " * 40)}))
    (root / "d.jsonl").write_text("\n".join(lines) + "\n")
    return str(root / "d.jsonl")


def _cfg(out, model, data, workers, **kw):
    return HarvestConfig(out=str(out), model=str(model), layer=1, data=data, records_per_shard=5, batch_size=3,
                         max_seq_len=40, progress=False, workers=workers, **kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_give_the_same_store_as_in_process(llava_dir, tmp_path, same_store, workers):
    data = _jsonl(tmp_path)
    m0 = harvest(_cfg(tmp_path / "w0", llava_dir, data, 0))
    harvest(_cfg(tmp_path / f"w{workers}", llava_dir, data, workers, write_queue=1))
    same_store(tmp_path / "w0", tmp_path / f"w{workers}")
    reasons = {r["id"]: r["reason"] for r in map(json.loads, (tmp_path / "w0" / "rejects.jsonl").read_text().split("\n")[:-1])}
    assert set(reasons) == {"d.jsonl:2", "two", "long"}  # each bad record named; the rest of its batch stored
    assert "malformed JSON" in reasons["d.jsonl:2"] and "placeholders" in reasons["two"]
    assert "max_seq_len 40" in reasons["long"] and m0["n_samples"] == 9


class _Flaky:
    """A source with a bug at one record (not a Reject) that logs each load to a folder."""

    def __init__(self, n, bad, log=None):
        from mmsae.world import World, WorldConfig

        self.world, self.n, self.bad, self.log = World(WorldConfig(seed=0)), n, bad, log

    def __len__(self):
        return self.n

    def record(self, i):
        if self.log is not None:
            (self.log / f"{i}-{os.getpid()}").touch()
        if i == self.bad:
            raise RuntimeError(f"decoder crashed on item {i}")
        text = "<image> <image>" if i == self.bad + 1 else "<image> what colour"  # an encode failure too
        return Record(f"r{i}", [self.world[i].pil], text)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_item_in_a_worker_is_named_and_the_batch_goes_on(llava_dir, workers):
    from mmsae.models import load_adapter

    adapter = load_adapter(llava_dir)
    rejects = []
    got = list(capture_batches(adapter, _Flaky(7, bad=3), range(7), 1, 3, lambda *r: rejects.append(r),
                               workers=workers))
    assert [consumed for consumed, _ in got] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [[c.index for c in caps] for _, caps in got] == [[0, 1, 2], [5], [6]]
    assert rejects[0] == (3, "#3", "RuntimeError: decoder crashed on item 3")
    assert rejects[1][:2] == (4, "r4") and rejects[1][2].startswith("encode failed: AdapterError")
    assert len(rejects) == 2
    if workers:  # the same activations as in process, bit for bit
        ref = [c for _, caps in capture_batches(adapter, _Flaky(7, bad=3), range(7), 1, 3, lambda *r: None)
               for c in caps]
        for a, b in zip(ref, [c for _, caps in got for c in caps]):
            assert torch.equal(a.acts_SD, b.acts_SD) and (a.table.token_id == b.table.token_id).all()


def test_prefetch_is_bounded(llava_dir, tmp_path):
    from mmsae.models import load_adapter

    adapter = load_adapter(llava_dir)
    log = tmp_path / "log"
    log.mkdir()
    batches = prepared_batches(adapter, _Flaky(60, bad=-5, log=log), [range(60)], 2, workers=1)
    first = next(batches)
    assert first[2].consumed == [0, 1]
    seen, deadline = -1, time.time() + 20
    while time.time() < deadline:  # let the worker run ahead as far as it may
        time.sleep(0.5)
        n = len(list(log.iterdir()))
        if n == seen:
            break
        seen = n
    # the batch taken plus PREFETCH more: prepared ahead, but never the whole (60-record) data
    assert 2 * 2 <= seen <= 2 * (1 + PREFETCH)
    assert all(name.split("-")[1] != str(os.getpid()) for name in os.listdir(log))  # loaded in the worker
    assert sum(1 for _ in batches) == 29


def test_batches_never_span_segments_and_workers_are_validated(monkeypatch):
    assert plan([range(0, 5), range(10, 12)], 2) == [(0, False, [0, 1]), (0, False, [2, 3]), (0, True, [4]),
                                                     (1, True, [10, 11])]
    with pytest.raises(ValueError, match="workers must be an integer >= 0.*got -1"):
        resolve_workers(-1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(2)))
    assert default_workers() == 1 and resolve_workers(None) == 1 and resolve_workers(0) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(64)))
    assert default_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0})
    assert default_workers() == 0


def test_background_queue_is_bounded_and_close_flushes():
    gate, handled = threading.Event(), []

    def handle(item):
        gate.wait()
        handled.append(item)

    bg = Background(handle, maxsize=2)
    put = []
    producer = threading.Thread(target=lambda: [bg.put(i) or put.append(i) for i in range(10)])
    producer.start()
    time.sleep(0.5)
    assert len(put) == 3  # one in the handler, two queued: the producer is blocked on the fourth
    gate.set()
    producer.join(10)
    bg.close()
    assert handled == list(range(10)) and bg.n_handled == 10


def test_background_threads_apply_to_the_consumer_thread_only():
    """The shard writer runs its small operations on one torch thread; the forward's setting stays."""
    import torch

    before, seen = torch.get_num_threads(), []
    bg = Background(lambda item: seen.append(torch.get_num_threads()), maxsize=1, threads=before + 1)
    bg.put(0)
    bg.close()
    assert seen == [before + 1] and torch.get_num_threads() == before


def test_background_error_surfaces_and_stops_the_handling():
    handled = []

    def handle(item):
        if item == 2:
            raise OSError("disk full at item 2")
        handled.append(item)

    bg = Background(handle, maxsize=1)
    with pytest.raises(OSError, match="disk full at item 2"):
        for i in range(100):
            bg.put(i)
            time.sleep(0.01)
    with pytest.raises(OSError, match="disk full"):
        bg.close()
    assert handled == [0, 1]  # nothing after the failure was handled (so nothing written after it)
    with pytest.raises(ValueError, match="maxsize must be >= 1, got 0"):
        Background(handle, maxsize=0)


def test_writer_failure_stops_harvest_and_a_rerun_completes(llava_dir, tmp_path, same_store, monkeypatch):
    from mmsae.store import shard

    cfg = dict(layer=1, data="world:n=7,seed=2", records_per_shard=2, batch_size=2, progress=False)
    harvest(HarvestConfig(out=str(tmp_path / "ref"), model=str(llava_dir), workers=0, **cfg))
    real, calls = shard.save_file, [0]

    def failing(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise OSError("No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(shard, "save_file", failing)
    out = tmp_path / "s"
    with pytest.raises(OSError, match="No space left"):
        harvest(HarvestConfig(out=str(out), model=str(llava_dir), workers=1, **cfg))
    assert sorted(p.name for p in (out / "shards").glob("*.json")) == ["shard-000000.json", "shard-000001.json"]
    monkeypatch.setattr(shard, "save_file", real)
    harvest(HarvestConfig(out=str(out), model=str(llava_dir), workers=1, **cfg))
    same_store(tmp_path / "ref", out)


def test_small_tensors_travel_inline_big_ones_by_shared_memory():
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers torch's shared-memory reductions)

    from mmsae.models import Encoded
    from mmsae.models.table import TokenTable
    from mmsae.store.prefetch import INLINE_BYTES, Prepared

    small = torch.arange(64 * 1024, dtype=torch.int64).reshape(8, -1)  # 512 KiB
    big = torch.randn(INLINE_BYTES // 4 + 1)  # just over the limit
    enc = Encoded({"input_ids": small, "pixel_values": big, "image_sizes": [3]}, [TokenTable.empty(2)])
    prepared = Prepared([0], [], [([(0, None)], enc)])
    buf = bytes(ForkingPickler.dumps(prepared))
    assert small.numel() * 8 < len(buf) < small.numel() * 8 + (1 << 16)  # the big one is not in the bytes
    assert set(enc.inputs) == {"input_ids", "pixel_values", "image_sizes"}  # the sender's batch is untouched
    back = ForkingPickler.loads(buf).groups[0][1]
    assert torch.equal(back.inputs["input_ids"], small) and torch.equal(back.inputs["pixel_values"], big)
    assert back.inputs["image_sizes"] == [3] and len(back.tables[0]) == 2
