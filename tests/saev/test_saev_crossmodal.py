import sys
from pathlib import Path

import numpy as np
import pytest

from mmsae.index import IndexConfig, build_index, open_index
from mmsae.index.crossmodal import crossmodal_weights, read_crossmodal
from mmsae.models.table import IMAGE, TEXT
from mmsae.saev.crossmodal import CrossmodalConfig, run_crossmodal
from mmsae.saev.scoring import coded_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_helper import sigkill_once  # noqa: E402

PROMPT = "<s> user : <image> {caption}"

DATA = "world:n=12,seed=5"


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, sae_dir):
    out = tmp_path_factory.mktemp("idx")
    build_index(IndexConfig(out=str(out), sae=str(sae_dir), data=DATA, prompt=PROMPT, top_n=3, n_text=2,
                            device="cpu", progress=False))
    return out


def copy_index(index_dir, to):
    import shutil

    shutil.copytree(index_dir, to)
    return to


def brute_force(subject, sae, k=30, need=5, pairs=5):
    from mmsae.data import open_source

    src = open_source(DATA, prompt=PROMPT)
    coded = [c for _, cs in coded_records(subject, sae, src, range(len(src)), 3, lambda *a: None) for c in cs]
    mod = np.concatenate([c.table.modality for c in coded])
    codes = np.concatenate([c.codes_TF.numpy() for c in coded])
    acts = np.concatenate([c.acts_TD.numpy() for c in coded]).astype(np.float64)
    unit = acts / np.linalg.norm(acts, axis=1, keepdims=True)
    out = np.full(codes.shape[1], np.nan)
    counts = np.zeros((codes.shape[1], 2), int)
    for f in range(codes.shape[1]):
        order = np.argsort(-codes[:, f], kind="stable")
        top = [t for t in order[:k] if codes[t, f] > 0]
        text = [t for t in top if mod[t] == TEXT]
        image = [t for t in top if mod[t] == IMAGE]
        counts[f] = len(text), len(image)
        if len(text) >= need and len(image) >= need:
            out[f] = (unit[text[:pairs]] @ unit[image[:pairs]].T).mean()
    return out, counts


def test_weights_equal_brute_force_and_are_stored(index_dir, subject, sae, tmp_path):
    idx = copy_index(index_dir, tmp_path / "i")
    summary = run_crossmodal(CrossmodalConfig(index=str(idx), k=12, min_modality=3, pairs=2, chunk_records=5,
                                              device="cpu", progress=False))
    want, counts = brute_force(subject, sae, 12, 3, 2)
    con = open_index(idx)
    got = read_crossmodal(con)
    w = crossmodal_weights(con, sae.cfg.n_latents)
    con.close()
    assert np.array_equal(np.isnan(w), np.isnan(want))
    assert np.allclose(w[~np.isnan(w)], want[~np.isnan(want)], atol=1e-5)
    assert np.array_equal(got["n_text"], counts[:, 0]) and np.array_equal(got["n_image"], counts[:, 1])
    assert summary["n_weighted"] == int((~np.isnan(want)).sum()) > 0
    import pyarrow.parquet as pq

    table = pq.read_table(summary["parquet"])
    assert table.column_names == ["feature", "weight", "n_text", "n_image"]
    assert table.column("weight").null_count == int(np.isnan(want).sum())


def test_sigkill_then_rerun_gives_the_same_weights(index_dir, tmp_path):
    a, b = copy_index(index_dir, tmp_path / "a"), copy_index(index_dir, tmp_path / "b")
    kw = dict(k=12, min_modality=3, pairs=2, chunk_records=2, batch_size=2, device="cpu", progress=False)
    run_crossmodal(CrossmodalConfig(index=str(a), **kw))
    code = ("import torch; torch.set_num_threads(1); from mmsae.saev.crossmodal import CrossmodalConfig, run_crossmodal; "
            f"run_crossmodal(CrossmodalConfig(index={str(b)!r}, **{kw!r}))")
    sigkill_once(["-c", code], lambda: (b / "crossmodal-state" / "state.pt").exists())
    run_crossmodal(CrossmodalConfig(index=str(b), **kw))
    ca, cb = open_index(a), open_index(b)
    ra, rb = read_crossmodal(ca), read_crossmodal(cb)
    ca.close(), cb.close()
    for key in ra:
        assert np.array_equal(ra[key], rb[key], equal_nan=True), key
    assert not (b / "crossmodal-state").exists()


def test_bad_parameters_and_missing_weights_are_clear(index_dir):
    with pytest.raises(ValueError, match="pairs must be <= min_modality"):
        CrossmodalConfig(index="x", pairs=6)
    with pytest.raises(ValueError, match="k must be >= 1"):
        CrossmodalConfig(index="x", k=0)
    con = open_index(index_dir)
    with pytest.raises(ValueError, match="mmsae crossmodal --index"):
        read_crossmodal(con)
    con.close()
