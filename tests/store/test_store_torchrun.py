"""Two ranks with the gloo backend on CPU, launched the way torchrun does (RANK/WORLD_SIZE/MASTER_*
environment): each rank writes its own shards, rank 0 merges the manifest, and the store equals a
single-process one."""

import json
import multiprocessing
import os
import socket

from mmsae.store import HarvestConfig, harvest


def _cfg(out, model):
    return HarvestConfig(out=str(out), model=str(model), layer=2, data="world:n=7,seed=4", records_per_shard=2,
                         batch_size=2, progress=False)


def _rank(rank: int, world: int, port: int, out, model) -> None:
    # Forked (no re-import of torch); the env is exactly what torchrun sets for each worker.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        harvest(_cfg(out, model))
    except BaseException:
        import traceback

        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_gloo_match_one_process(llava_dir, tmp_path, same_store):
    out = tmp_path / "dist"
    port = _free_port()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_rank, args=(r, 2, port, out, llava_dir)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    m = json.loads((out / "manifest.json").read_text())
    assert m["created_by"]["world_size"] == 2 and len(m["shards"]) == 4 and m["n_samples"] == 7
    single = tmp_path / "single"
    harvest(_cfg(single, llava_dir))
    same_store(single, out)
