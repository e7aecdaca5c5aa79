"""build_index with data-loader workers and its update thread: the same index as in process, a stop
in the update thread's hook leaves the resume point at the last chunk written, and resumes to the same."""

import pytest
import torch
from test_index_build import config, dump, make_sae

from mmsae.index import build_index

torch.set_num_threads(1)


def test_workers_and_update_thread_give_the_same_index(tmp_path):
    sae = make_sae(tmp_path / "sae")
    small = dict(data="world:n=20,seed=1", chunk_records=8, batch_size=3)
    build_index(config(tmp_path / "w0", sae, workers=0, **small))
    build_index(config(tmp_path / "w2", sae, workers=2, update_queue=1, **small))
    assert dump(tmp_path / "w0") == dump(tmp_path / "w2")


def test_a_stop_in_the_update_thread_resumes_to_the_same_index(tmp_path):

    sae = make_sae(tmp_path / "sae")
    small = dict(data="world:n=20,seed=1", chunk_records=8, batch_size=3, workers=1)
    build_index(config(tmp_path / "ref", sae, **small))
    seen = []

    def stop(chunk, next_record):
        seen.append((chunk, next_record))
        if chunk == 0:
            raise KeyboardInterrupt  # raised in the update thread, re-raised here

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        build_index(config(out, sae, **small), on_chunk=stop)
    assert seen == [(0, 8)]
    saved = torch.load(out / "state" / "state.pt", weights_only=True)
    assert saved["next_record"] == 8  # chunk 1 was not saved after the stop, whatever the queue held
    assert not (out / "state" / "samples-000001.parquet").exists()
    build_index(config(out, sae, **small))
    assert dump(out) == dump(tmp_path / "ref")


def test_forward_streams_give_the_same_index(tmp_path):
    sae = make_sae(tmp_path / "sae")
    small = dict(data="world:n=20,seed=1", chunk_records=8, batch_size=3, workers=0)
    build_index(config(tmp_path / "s1", sae, streams=1, **small))
    build_index(config(tmp_path / "s3", sae, streams=3, **small))
    assert dump(tmp_path / "s1") == dump(tmp_path / "s3")
