"""build_index on the zoo subject with a small random TopK SAE over 40 world scenes: brute-force
recompute, resume after a stop equals an uninterrupted run, checks before work, rejects."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsae.index import (
    IndexConfig,
    build_index,
    feature_examples,
    feature_examples_many,
    feature_stats,
    index_source,
    open_index,
    read_meta,
    resolve_paths,
    text_contexts,
    top_features,
)
from mmsae.models.table import IMAGE, SPECIAL, TEXT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_helper import sigkill_once  # noqa: E402
from mmsae.sae import SAE, SAEConfig

torch.set_num_threads(1)

DATA = "world:n=40,seed=0"
PROMPT = "<s> user : <image> {caption}"
TABLES = {"meta": "key", "features": "feature", "samples": "sample", "examples": "feature, rank",
          "images": "sample, image_index", "image_patches": "sample, image_index, ord",
          "patch_maps": "feature, rank", "text_contexts": "feature, rank", "explanations": "feature",
          "scores": "feature"}


def make_sae(path, d_in=128, hook_layer=3, n_latents=256, k=8, seed=0):
    torch.manual_seed(seed)
    sae = SAE.from_config(SAEConfig(kind="topk", d_in=d_in, n_latents=n_latents, k=k, hook_layer=hook_layer))
    sae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory):
    return make_sae(tmp_path_factory.mktemp("sae") / "sae")


def config(out, sae, **kw):
    base = dict(out=str(out), sae=str(sae), data=DATA, prompt=PROMPT, top_n=5, n_text=4, batch_size=8,
                chunk_records=16, device="cpu", progress=False)
    return IndexConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def full_index(tmp_path_factory, sae_dir):
    out = tmp_path_factory.mktemp("full")
    build_index(config(out, sae_dir))
    return out


def dump(path):
    """Every table, less meta's paths relative to the index (they depend on where it was built)."""
    con = open_index(path)
    try:
        tables = {t: con.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall() for t, o in TABLES.items()}
    finally:
        con.close()
    tables["meta"] = [(k, v) for k, v in tables["meta"] if not k.endswith("_relpath")]
    return tables


def brute_force(sae_dir, chunk_records=16, batch_size=8):
    """Codes of every token, captured with the same batches as the build (so bit-identical)."""
    from mmsae.data import open_source
    from mmsae.models import load_adapter
    from mmsae.store.stream import capture_batches
    from mmsae.zoo import model_dir

    adapter = load_adapter(str(model_dir("subject")))
    sae = SAE.from_pretrained(sae_dir)
    source = open_source(DATA, prompt=PROMPT)
    out = []
    for lo in range(0, len(source), chunk_records):
        rng = range(lo, min(lo + chunk_records, len(source)))
        for _, caps in capture_batches(adapter, source, rng, 3, batch_size, lambda *a: None):
            with torch.no_grad():  # the index's values: one float32 dot product each, not the dense product's
                dense_TF = sae.encode_exact(torch.cat([c.acts_SD for c in caps])).to_dense()
            s = 0
            for c in caps:
                out.append((c, dense_TF[s:s + len(c.table)].double().numpy()))
                s += len(c.table)
    return out, adapter.tokenizer


def test_examples_and_stats_equal_brute_force(full_index, sae_dir):
    records, tokenizer = brute_force(sae_dir)
    con = open_index(full_index)
    features = [f.feature for f in top_features(con, min_examples=5, order_by="max_act", limit=4)]
    assert len(features) == 4
    many = feature_examples_many(con, features, n=3)  # the batched read: the same examples, cut at 3
    for f in features:
        # per image: max over its image tokens; ranked by max desc, then sample
        per_image = []
        for c, codes in records:
            img = c.table.modality == IMAGE
            if codes[img, f].max() > 0:
                per_image.append((-codes[img, f].max(), c.index, codes[img, f]))
        per_image.sort(key=lambda t: (t[0], t[1]))
        examples = feature_examples(con, f)
        assert [e.sample for e in examples] == [s for _, s, _ in per_image[:5]]
        assert [(e.rank, e.sample) for e in many[f]] == [(e.rank, e.sample) for e in examples[:3]]
        assert all(np.array_equal(a.acts, b.acts) and np.array_equal(a.box, b.box, equal_nan=True)
                   for a, b in zip(many[f], examples))
        for e, (neg_max, _, col) in zip(examples, per_image):
            assert e.max_act == -neg_max and e.score == e.max_act
            assert e.mean_act == pytest.approx(col.mean(), rel=1e-6)
            np.testing.assert_array_equal(e.acts, col.astype(np.float32))  # the whole patch map, dense
            assert e.sample_id == f"world-0-{e.sample}" and (e.width, e.height) == (64, 64)
            assert len(e.acts) == 64 and e.box.shape == (64, 4)
            np.testing.assert_array_equal(e.box, records[e.sample][0].table.box[records[e.sample][0].table.modality
                                                                              == IMAGE])
        # statistics over every token
        all_codes = np.concatenate([codes[:, f] for _, codes in records])
        mods = np.concatenate([c.table.modality for c, _ in records])
        stats = feature_stats(con, f)
        fired = all_codes > 0
        assert stats.n_fires == fired.sum()
        assert stats.n_image_fires == (fired & (mods == IMAGE)).sum()
        assert stats.n_text_fires == (fired & (mods == TEXT)).sum()
        assert stats.n_special_fires == (fired & (mods == SPECIAL)).sum()  # derived from the contract columns
        assert stats.max_act == all_codes.max()
        assert stats.mean_act == pytest.approx(all_codes[fired].mean(), rel=1e-6)
        assert stats.frequency == pytest.approx(fired.sum() / len(all_codes))
        assert stats.image_share == pytest.approx(stats.n_image_fires / (stats.n_image_fires + stats.n_text_fires))
        # text tokens: top activations, ties by (sample, position)
        text = sorted((-codes[p, f], c.index, int(c.table.position[p])) for c, codes in records
                      for p in np.flatnonzero((c.table.modality == TEXT) & (codes[:, f] > 0)))[:4]
        got = text_contexts(con, f)
        assert [(-t.activation, t.sample, t.position) for t in got] == [(a, s, p) for a, s, p in text]
        for t in got:
            table = records[t.sample][0].table
            assert t.token == tokenizer.decode([int(table.token_id[t.position])])
            assert f"<<{t.token}>>" in t.context
    meta = read_meta(con)
    assert meta["n_tokens"] == sum(len(c.table) for c, _ in records)
    assert meta["layer"] == 3 and meta["n_latents"] == 256 and meta["rank_by"] == "max"
    assert con.execute("SELECT count(*) FROM features").fetchone()[0] == 256
    assert con.execute("SELECT count(*) FROM explanations").fetchone()[0] == 0
    con.close()


def test_stop_and_resume_gives_the_same_index(tmp_path, full_index, sae_dir):
    out = tmp_path / "resumed"

    def stop(chunk, next_record):
        if chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(config(out, sae_dir), on_chunk=stop)
    assert not (out / "index.duckdb").exists()
    saved = torch.load(out / "state" / "state.pt", weights_only=True)
    assert saved["next_record"] == 32
    # A kill during chunk 2 leaves a temp file and a stale chunk file behind.
    (out / "state" / ".state.pt.tmp-999").write_bytes(b"junk")
    shutil.copy(out / "state" / "samples-000000.parquet", out / "state" / "samples-000002.parquet")
    build_index(config(out, sae_dir))
    assert dump(out) == dump(full_index)
    assert not (out / "state").exists()
    # Done: a rerun reuses it (and keeps rows later stages added).
    con = open_index(out, read_only=False)
    con.execute("INSERT INTO scores VALUES (1, 'iou', 0.5, 'object', '{}', 'm', 0)")
    con.close()
    build_index(config(out, sae_dir))
    assert len(dump(out)["scores"]) == 1
    # ...but one of another schema version is not handed back as if it were current
    con = open_index(out, read_only=False)
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(ValueError, match="has schema version 1;.*remove index.duckdb first"):
        build_index(config(out, sae_dir))


@pytest.mark.parametrize("selection", ["float32", "bfloat16", "int8"])
def test_every_selection_dtype_gives_the_same_index(tmp_path, full_index, sae_dir, selection):
    """full_index ran with selection_dtype auto (bfloat16 where native); the exact values decide, so
    every dtype of the selection product gives the same tables, and it is not part of the identity."""
    out = tmp_path / selection
    build_index(config(out, sae_dir, selection_dtype=selection))
    assert dump(out) == dump(full_index)
    assert json.loads((out / "index.json").read_text()) == json.loads((full_index / "index.json").read_text())


def test_selection_dtype_is_checked(tmp_path, sae_dir):
    with pytest.raises(ValueError, match="selection_dtype must be one of .*'float16'"):
        build_index(config(tmp_path / "bad", sae_dir, selection_dtype="float16"))


KILL_SCRIPT = """
import sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from test_index_build import config
from mmsae.index import build_index
build_index(config({out!r}, {sae!r}), on_chunk=lambda chunk, nxt: time.sleep(0.5))
"""


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_same_index(tmp_path, full_index, sae_dir):
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(here=str(Path(__file__).parent), out=str(out), sae=str(sae_dir))
    sigkill_once(["-c", script], lambda: (out / "state" / "state.pt").exists())
    assert not (out / "index.duckdb").exists()
    build_index(config(out, sae_dir))
    assert dump(out) == dump(full_index)


def test_an_index_moved_with_its_sae_still_finds_it(tmp_path, sae_dir):
    """Built under one name and renamed (as `mmsae demo` writes its output): the recorded SAE path is gone,
    the path relative to the index finds it."""
    first = tmp_path / "first"
    shutil.copytree(sae_dir, first / "sae")
    build_index(config(first / "idx", first / "sae", data="world:n=4,seed=0"))
    first.rename(tmp_path / "moved")
    con = open_index(tmp_path / "moved" / "idx")
    meta = read_meta(con)
    con.close()
    assert not Path(meta["sae"]).exists() and Path(meta["model"]).exists()
    found = resolve_paths(meta, tmp_path / "moved" / "idx")
    assert found["sae"] == str((tmp_path / "moved" / "sae").resolve()) and found["model"] == meta["model"]


def test_rerun_with_other_settings_is_refused(full_index, sae_dir):
    with pytest.raises(ValueError, match="other settings.*top_n"):
        build_index(config(full_index, sae_dir, top_n=7))


def test_width_and_layer_mismatch_fail_before_work(tmp_path, sae_dir):
    narrow = make_sae(tmp_path / "narrow", d_in=64)
    with pytest.raises(ValueError, match="d_in 64 .* d_model 128"):
        build_index(config(tmp_path / "a", narrow))
    with pytest.raises(ValueError, match="layer 2 was requested .* trained on layer 3"):
        build_index(config(tmp_path / "b", sae_dir, layer=2))
    unhooked = make_sae(tmp_path / "unhooked", hook_layer=None)
    with pytest.raises(ValueError, match="no hook layer"):
        build_index(config(tmp_path / "c", unhooked))
    deep = make_sae(tmp_path / "deep", hook_layer=9)
    with pytest.raises(ValueError, match="out of range"):
        build_index(config(tmp_path / "d", deep))
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_bad_record_is_rejected_and_the_rest_indexed(tmp_path, sae_dir):
    from mmsae.data import open_source

    world = open_source("world:n=3,seed=0").world
    lines = []
    for i in range(3):
        if i != 1:
            world[i].pil.save(tmp_path / f"img{i}.png")
        lines.append({"id": f"rec{i}", "image": f"img{i}.png",
                      "conversations": [{"from": "human", "value": "<image> a scene"}]})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    world[2].pil.resize((64, 72)).save(tmp_path / "img2.png")  # 4608 pixels: over the limit below
    out = tmp_path / "idx"
    build_index(config(out, sae_dir, data=str(data), prompt=None, max_image_pixels=64 * 64))
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["index"], r["id"]) for r in rejects] == [(1, "rec1"), (2, "rec2")]
    assert "img1.png" in rejects[0]["reason"] and "max_pixels 4096" in rejects[1]["reason"]
    con = open_index(out)
    assert {s for (s,) in con.execute("SELECT DISTINCT sample FROM examples").fetchall()} <= {0}
    meta = read_meta(con)
    assert meta["n_rejects"] == 2 and meta["n_samples"] == 1
    con.close()
    # readers reopen the source with the index's limit, so they see the records the index saw
    assert meta["max_pixels"] == 64 * 64 and index_source(meta).max_pixels == 64 * 64


def test_cli_builds_an_index(tmp_path, sae_dir):
    from click.testing import CliRunner

    from mmsae.cli import command

    app = command()
    out = tmp_path / "cli"
    args = ["index", "--sae", str(sae_dir), "--data", "world:n=6,seed=0", "--out", str(out), "--top-n", "3",
            "--rank-by", "mean", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    con = open_index(out)
    assert read_meta(con)["rank_by"] == "mean"
    assert con.execute("SELECT bool_and(score = mean_act) FROM examples").fetchone()[0]
    con.close()
    assert "features (" in result.stdout and str(out / "index.duckdb") in result.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"] == "IndexConfig" and cfg["top_n"] == 3 and cfg["model"]  # the default model filled in
    as_json = CliRunner().invoke(app, [*args, "--json"])  # a rerun reuses the finished index
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["index"] == str(out / "index.duckdb")
    bad = CliRunner().invoke(app, ["index", "--sae", str(sae_dir), "--out", str(tmp_path / "bad"), "--layer", "1"])
    assert bad.exit_code == 2 and "trained on layer 3" in bad.output
