"""Harvest into a store: counts, statistics, token table join, token selection, reader."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmsae.models import IMAGE, SPECIAL, TEXT, Prompt, load_adapter
from mmsae.store import ActivationStore, HarvestConfig, harvest


@pytest.fixture(scope="module")
def store(llava_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("store")
    cfg = HarvestConfig(out=str(out), model=str(llava_dir), layer=2, data="world:n=7,seed=3",
                        prompt="<image> describe the image", records_per_shard=3, batch_size=2,
                        dtype="float32", progress=False)
    manifest = harvest(cfg)
    return out, manifest


def test_manifest_counts_and_shards(store, llava_dir):
    out, m = store
    assert m["layer"] == 2 and m["d_in"] == 32 and m["dtype"] == "float32"
    assert m["model"]["family"] == "llava" and len(m["model"]["fingerprint"]) == 64
    assert [s["records"] for s in m["shards"]] == [[0, 3], [3, 6], [6, 7]]
    assert m["shards"][0]["row_start"] == 0 and m["shards"][-1]["row_end"] == m["n_rows"]
    # each record: BOS + 16 image tokens + "describe the image" (3 text tokens)
    assert m["counts"]["tokens"] == {"text": 21, "image": 112, "special": 7}
    assert m["counts"]["rows"] == {"text": 21, "image": 112, "special": 0}  # BOS kept out by default
    assert m["n_rows"] == 133 and m["n_samples"] == 7 and m["n_rejects"] == 0
    assert json.loads((out / "manifest.json").read_text()) == m
    assert (out / "rejects.jsonl").read_text() == ""


def test_rows_join_token_table_and_match_a_direct_capture(store, llava_dir):
    out, m = store
    st = ActivationStore(out)
    tokens = st.tokens()
    assert tokens.num_rows == 140  # every token, training row or not
    rows = tokens.filter(tokens["sample_id"].to_numpy(zero_copy_only=False) == "world-3-4").to_pydict()
    assert rows["row"][0] is None and rows["modality"][0] == "special"  # BOS: in the table, not a row
    from mmsae.world import World, WorldConfig

    a = load_adapter(llava_dir)
    enc = a.encode([Prompt([World(WorldConfig(seed=3))[4].pil], "describe the image")])
    direct_SD = a.capture(enc.inputs, 2)[0]
    stored = st.rows([r for r in rows["row"] if r is not None])
    positions = [p for p, r in zip(rows["position"], rows["row"]) if r is not None]
    torch.testing.assert_close(stored, direct_SD[positions])
    img = [i for i, mod in enumerate(rows["modality"]) if mod == "image"]
    assert {rows["patch_row"][i] for i in img} == {0, 1, 2, 3} and rows["x1"][img[-1]] == 64.0
    # streamed float64 statistics equal those of the stored rows
    all_ND = st.rows(np.arange(st.n_rows), dtype=torch.float64)
    torch.testing.assert_close(st.mean_D, all_ND.mean(0))
    assert m["mean_norm"] == pytest.approx(all_ND.norm(dim=1).mean().item(), rel=1e-9)


def test_reader_is_a_deterministic_resumable_shuffle(store):
    out, _ = store
    st = ActivationStore(out)
    full = list(st.batches(16, seed=5, window_shards=2))
    rows = torch.cat([b.rows_B for b in full])
    assert sorted(rows.tolist()) == list(range(st.n_rows))  # each row exactly once per epoch
    assert rows.tolist() != list(range(st.n_rows))
    again = torch.cat([b.rows_B for b in st.batches(16, seed=5, window_shards=2)])
    assert torch.equal(rows, again)
    other = torch.cat([b.rows_B for b in st.batches(16, seed=6, window_shards=2)])
    assert not torch.equal(rows, other)
    torch.testing.assert_close(full[2].acts_BD, st.rows(full[2].rows_B.numpy()))
    # resume from a checkpointed position, mid-window and across epochs
    for k in (1, 4):
        resumed = torch.cat([b.rows_B for b in st.batches(16, seed=5, window_shards=2, start=full[k].position)])
        assert torch.equal(resumed, rows[full[k].position:])
    two = [b for b in st.batches(16, seed=5, window_shards=2, epochs=2)]
    cont = [b for b in st.batches(16, seed=5, window_shards=2, epochs=2, start=two[10].position)]
    assert torch.equal(torch.cat([b.rows_B for b in cont]), torch.cat([b.rows_B for b in two[11:]]))
    # two ranks split the same stream
    r0 = [b.rows_B for b in st.batches(16, seed=5, window_shards=2, rank=0, world_size=2)]
    r1 = [b.rows_B for b in st.batches(16, seed=5, window_shards=2, rank=1, world_size=2)]
    assert torch.equal(torch.cat(r0 + r1).sort().values, torch.arange(st.n_rows))


@pytest.mark.parametrize("tokens,special,expect", [("image", False, {IMAGE}), ("text", True, {TEXT, SPECIAL})])
def test_token_selection(llava_dir, tmp_path, tokens, special, expect):
    cfg = HarvestConfig(out=str(tmp_path / "s"), model=str(llava_dir), layer=0, data="world:n=2,seed=0",
                        prompt="<image> what colour", tokens=tokens, include_special=special, progress=False)
    m = harvest(cfg)
    names = {("text", "image", "special")[i] for i in expect}
    assert {k for k, v in m["counts"]["rows"].items() if v} == names
    assert m["dtype"] == "bfloat16"
    acts = ActivationStore(tmp_path / "s").shard_acts(0)
    assert acts.dtype == torch.bfloat16 and acts.shape == (m["n_rows"], 32)


def test_rerun_with_other_settings_is_refused(store, llava_dir):
    out, _ = store
    cfg = HarvestConfig(out=str(out), model=str(llava_dir), layer=1, data="world:n=7,seed=3", progress=False)
    with pytest.raises(ValueError, match="other settings"):
        harvest(cfg)


def test_rerun_on_changed_data_is_refused(llava_dir, tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (20, 20), "red").save(tmp_path / "imgs" / f"{i}.png")
    cfg = HarvestConfig(out=str(tmp_path / "s"), model=str(llava_dir), layer=0, data=str(tmp_path / "imgs"),
                        progress=False)
    harvest(cfg)
    Image.new("RGB", (20, 20), "blue").save(tmp_path / "imgs" / "2.png")
    with pytest.raises(ValueError, match="other settings"):
        harvest(cfg)


class _Table:
    def __init__(self, modality):
        self.modality = modality

    def __len__(self):
        return len(self.modality)


def test_statistics_are_the_same_bits_whatever_the_batch_size():
    """The store's mean and mean norm feed the SAE's normalisation: a last-bit change there trains another
    SAE, so they are summed record by record, in record order, whatever the batches."""
    from types import SimpleNamespace

    from mmsae.store.shard import ShardBuilder

    g = torch.Generator().manual_seed(0)
    records = []
    for i in range(60):
        n = int(torch.randint(5, 40, (1,), generator=g))
        acts = torch.randn(n, 64, generator=g) * torch.randn(n, 1, generator=g).exp() * 10
        modality = np.array([TEXT, IMAGE, SPECIAL])[torch.randint(0, 3, (n,), generator=g).numpy()]
        records.append(SimpleNamespace(index=i, id=str(i), table=_Table(modality), acts_SD=acts))
    stats = []
    for batch in (1, 7):
        b = ShardBuilder(0, (0, 60), 64)
        for lo in range(0, 60, batch):
            b.add_batch(records[lo:lo + batch], "all", False, torch.float32)
        stats.append((b.sum_D, b.sum_norm, torch.cat(b.acts), b.n_rows))
    (d1, n1, a1, r1), (d7, n7, a7, r7) = stats
    assert torch.equal(d1, d7) and n1 == n7 and torch.equal(a1, a7) and r1 == r7
