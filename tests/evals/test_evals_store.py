"""The trainer's and evaluator's store adapters over `mmsae.store.ActivationStore`, on a small
store written by hand in the store's layout (manifest + safetensors shards + Parquet token tables)."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from mmsae.evals import evaluate_sae
from mmsae.evals.runner import store_batches
from mmsae.sae import SAE, SAEConfig
from mmsae.train import StoreBatches, TensorBatches


def _write_store(root, n_shards=2, rows_per_shard=40, d=8):
    g = torch.Generator().manual_seed(0)
    (root / "shards").mkdir(parents=True)
    shards, all_acts, all_mod = [], [], []
    row = 0
    for k in range(n_shards):
        acts = torch.randn(rows_per_shard, d, generator=g) + k
        # one extra special token per shard that is not a training row (shard_row null)
        n_tok = rows_per_shard + 1
        modality = np.r_[np.arange(rows_per_shard) % 3 == 0, [False]].astype(np.int8)  # 1 = image
        modality[-1] = 2
        shard_row = np.r_[np.arange(rows_per_shard), [-1]]
        save_file({"acts": acts, "sum_D": acts.double().sum(0)}, str(root / "shards" / f"shard-{k}.safetensors"))
        table = pa.table({
            "shard_row": pa.array(shard_row, mask=shard_row < 0),
            "modality": pa.DictionaryArray.from_arrays(pa.array(modality), pa.array(["text", "image", "special"])),
        })
        pq.write_table(table, root / "shards" / f"shard-{k}.parquet")
        shards.append({"index": k, "acts": f"shards/shard-{k}.safetensors", "table": f"shards/shard-{k}.parquet",
                       "row_start": row, "row_end": row + rows_per_shard, "records": 1})
        row += rows_per_shard
        all_acts.append(acts)
        all_mod.append(modality[:-1])
        assert n_tok == len(modality)
    acts = torch.cat(all_acts)
    manifest = {"format": "mmsae-store/1", "d_in": d, "n_rows": row, "layer": 3, "model": {"path": "/m"},
                "mean": acts.double().mean(0).tolist(), "mean_norm": float(acts.norm(dim=1).mean()), "shards": shards}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return acts, np.concatenate(all_mod)


def test_store_batches_carry_each_rows_modality(tmp_path):
    acts, mod = _write_store(tmp_path)
    got = list(store_batches(tmp_path, batch_size=16))
    torch.testing.assert_close(torch.cat([a for a, _ in got]), acts)
    np.testing.assert_array_equal(np.concatenate([m for _, m in got]), mod)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=8, n_latents=16, k=2))
    report = evaluate_sae(sae, store_batches(tmp_path, batch_size=16))
    assert report["metrics"]["image"]["n_tokens"] == int((mod == 1).sum())
    assert report["metrics"]["text"]["n_tokens"] == int((mod == 0).sum())


def test_store_source_resumes_and_shards_by_rank(tmp_path):
    _write_store(tmp_path)
    src = StoreBatches(tmp_path, batch_size=8, seed=5)
    it = iter(src)
    first = [next(it) for _ in range(3)]
    state = src.state_dict()
    rest = [next(it) for _ in range(4)]
    again = StoreBatches(tmp_path, batch_size=8, seed=5)
    again.load_state_dict(state)
    it2 = iter(again)
    for want in rest:
        torch.testing.assert_close(next(it2), want)
    assert src.d_in == 8 and math.isclose(src.manifest["mean_norm"], src.manifest["mean_norm"])
    r0 = iter(StoreBatches(tmp_path, batch_size=8, seed=5, rank=0, world_size=2))
    r1 = iter(StoreBatches(tmp_path, batch_size=8, seed=5, rank=1, world_size=2))
    torch.testing.assert_close(next(r0), first[0])
    torch.testing.assert_close(next(r1), first[1])


def test_tensor_batches_state_round_trip():
    src = TensorBatches(torch.arange(40.0).reshape(20, 2), batch_size=6, seed=1)  # 3 batches per epoch
    it = iter(src)
    seen = [next(it) for _ in range(4)]  # crosses an epoch boundary
    state = src.state_dict()
    nxt = next(it)
    other = TensorBatches(torch.arange(40.0).reshape(20, 2), batch_size=6, seed=1)
    other.load_state_dict(state)
    torch.testing.assert_close(next(iter(other)), nxt)
    assert not torch.equal(seen[0], seen[3])  # a new epoch has a new order
    with pytest.raises(ValueError, match="exceeds"):
        TensorBatches(torch.zeros(3, 2), batch_size=4)
