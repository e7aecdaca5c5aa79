"""DuckDB write and typed readers, on synthetic sequences (no model): dense patch maps, NaN boxes,
text contexts, geometry kept only for images some top-N still references."""

import numpy as np
import pyarrow.parquet as pq
from index_synthetic import F_STATE, IdentitySAE, brute_state, synthetic_records
from PIL import Image

from mmsae.index import SCHEMA_VERSION, feature_examples, open_index, read_meta, text_contexts, top_features
from mmsae.index.build import ChunkBuffer
from mmsae.index.db import chunk_file, render_contexts, write_index
from mmsae.index.state import IMAGE_MARK, NO_TOKEN, IndexState
from mmsae.models.table import IMAGE



class FakeRecord:
    def __init__(self, n_images, text):
        self.images = [Image.new("RGB", (16 + m, 8)) for m in range(n_images)]
        self.text = text


def decode(batch):
    return [" ".join(f"w{i}" for i in ids) for ids in batch]


def test_written_index_reads_back_as_brute_force(tmp_path):
    recs = synthetic_records(seed=3)
    for c in recs:
        c.record = FakeRecord(int(c.table.image_index.max()) + 1, f"text of {c.id}")
        for m in range(len(c.record.images)):  # the first patch of each image lies wholly on padding
            c.table.box[np.flatnonzero((c.table.modality == IMAGE) & (c.table.image_index == m))[0]] = np.nan
    state = IndexState(F_STATE, 2, 3, "max", (2, 1), "cpu")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    for chunk, part in enumerate((recs[:4], recs[4:])):
        buffer = ChunkBuffer()
        state.add_batch(part, IdentitySAE(False), sae_block=7)
        buffer.add(part)
        buffer.write(state_dir, chunk, *state.referenced())
    top, extra, maps, ttop = brute_state(recs, 2, "max")
    write_index(tmp_path / "index.duckdb", {"n_latents": F_STATE}, state, state_dir, decode)

    con = open_index(tmp_path)
    assert read_meta(con) == {"n_latents": F_STATE, "schema_version": SCHEMA_VERSION}
    by_index = {c.index: c for c in recs}
    for f in range(F_STATE):
        examples = feature_examples(con, f)
        assert [(e.max_act, e.sample << 12 | e.image_index) for e in examples] == top[f]
        for e in examples:
            k = e.sample << 12 | e.image_index
            np.testing.assert_array_equal(e.acts, maps[(f, k)].astype(np.float32))
            assert e.mean_act == extra[(f, k)][1]
            t = by_index[e.sample].table
            sel = (t.modality == IMAGE) & (t.image_index == e.image_index)
            np.testing.assert_array_equal(e.box, t.box[sel])  # NaN where the patch covers no pixel
            assert np.isnan(e.box[0]).all()
            np.testing.assert_array_equal(e.tile, t.tile[sel])
            assert (e.width, e.height) == (16 + e.image_index, 8)
            assert e.sample_id == by_index[e.sample].id
        got = text_contexts(con, f)
        assert [(t.activation, t.sample << 20 | t.position) for t in got] == ttop[f]
        for t in got:
            assert t.token == f"w{by_index[t.sample].table.token_id[t.position]}"
            assert f"<<{t.token}>>" in t.context
    # only referenced images' geometry survives, in the chunk files and in the index
    referenced = set(state.referenced()[0].tolist())
    for chunk in (0, 1):
        rows = pq.read_table(chunk_file(state_dir, "images", chunk)).to_pylist()
        assert all((r["sample"] << 12 | r["image_index"]) in referenced for r in rows)
    n_images = con.execute("SELECT count(*) FROM images").fetchone()[0]
    assert n_images == len(referenced)
    assert con.execute("SELECT count(*) FROM image_patches WHERE x0 IS NULL").fetchone()[0] == n_images
    feats = top_features(con, min_fires=1, order_by="max_act")
    assert [x.max_act for x in feats] == sorted((x.max_act for x in feats), reverse=True)
    assert all(x.n_examples == len(top[x.feature]) for x in feats)
    con.close()


def test_render_contexts_marks_the_token_and_collapses_images():
    tokens, contexts = render_contexts(np.array([[NO_TOKEN, 5, 8, IMAGE_MARK, 7], [1, 2, 3, NO_TOKEN, NO_TOKEN]]),
                                       2, decode)
    assert tokens == ["w8", "w3"]
    assert contexts == ["w5 <<w8>> <image> w7", "w1 w2 <<w3>>"]
