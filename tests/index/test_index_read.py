"""The one index reader (mmsae.index.read) over hand-built contract indexes: batched top images with dense
maps in two queries, inconsistent rows named per feature, stats on contract-only columns, the indexed
data source and its checked images."""

import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402

import mmsae.index.read as read  # noqa: E402
from mmsae.index import (  # noqa: E402
    example_image,
    feature_examples,
    feature_examples_many,
    feature_stats,
    index_source,
    open_index,
    read_meta,
    require_features,
    top_features,
)

EYE = np.eye(8, dtype=np.float32)


class CountingConnection:
    """A connection that records every statement it runs."""

    def __init__(self, con):
        self.con, self.statements = con, []

    def execute(self, sql, *args):
        self.statements.append(sql)
        return self.con.execute(sql, *args)


@pytest.fixture
def index_dir(tmp_path):
    maps = {3: concept_feature(0, 8, "red", top=3),
            5: [(4, EYE * 2.0), (2, EYE), (6, EYE * 0.5)],
            6: [(4, np.triu(np.ones((8, 8), np.float32)))]}
    return world_index(tmp_path / "idx", maps, n=8, text_only=(9,))


def fields(e):
    return (e.feature, e.rank, e.sample, e.sample_id, e.image_index, e.max_act, e.mean_act, e.score, e.width,
            e.height, e.acts.tolist(), e.tile.tolist(), e.patch_row.tolist(), e.patch_col.tolist(),
            np.nan_to_num(e.box, nan=-7).tolist())


def test_many_features_are_read_in_two_queries_with_dense_maps(index_dir, monkeypatch):
    with open_index(index_dir) as con:
        counted = CountingConnection(con)
        many = feature_examples_many(counted, [6, 5, 9, 3, 5], n=2)
        assert len(counted.statements) == 2  # one examples query, one geometry query, not one per example
        assert list(many) == [6, 5, 9, 3]  # asked order, duplicates once; 9 fires on text only
        assert many[9] == [] and [len(many[f]) for f in (6, 5, 3)] == [1, 2, 2]
        first = many[5][0]
        assert (first.rank, first.sample, first.sample_id, first.max_act, first.width) == (0, 4, "world-0-4", 2.0, 64)
        assert np.array_equal(first.acts.reshape(8, 8), EYE * 2.0) and first.acts.dtype == np.float32
        r, c = np.divmod(np.arange(64), 8)
        assert np.array_equal(first.patch_row, r) and np.array_equal(first.patch_col, c) and not first.tile.any()
        assert np.array_equal(first.box[9], [8, 8, 16, 16])  # token (1, 1) covers pixels 8..16
        assert np.array_equal(first.active_boxes()[:, 0], np.arange(8) * 8.0)  # the diagonal
        assert np.array_equal(many[6][0].acts.reshape(8, 8), np.triu(np.ones((8, 8))))
        # the same as one feature at a time, and as a chunk per feature
        one_by_one = {f: [fields(e) for e in feature_examples(con, f, 2)] for f in (6, 5, 9, 3)}
        assert {f: [fields(e) for e in v] for f, v in many.items()} == one_by_one
        monkeypatch.setattr(read, "FEATURES_PER_QUERY", 1)
        chunked = feature_examples_many(con, [6, 5, 9, 3], n=2)
        assert {f: [fields(e) for e in v] for f, v in chunked.items()} == one_by_one
        assert [e.rank for e in feature_examples_many(con, [5])[5]] == [0, 1, 2]  # n=None: all of them
        assert feature_examples_many(con, [5], n=0) == {5: []}
        with pytest.raises(ValueError, match="n must be >= 0"):
            feature_examples_many(con, [5], n=-1)


@pytest.mark.parametrize("damage, reason", [
    ("UPDATE patch_maps SET ords = [70], acts = [1.0] WHERE feature = 5 AND rank = 1",
     "rank 1: sample 2 image 0: its patch map does not fit the image's 64 image tokens (ords 70..70, 1 acts)"),
    ("UPDATE patch_maps SET acts = [1.0] WHERE feature = 5 AND rank = 1", "(ords 0..63, 1 acts)"),
    ("DELETE FROM image_patches WHERE sample = 2", "rank 1: sample 2 image 0 has no rows in image_patches"),
    ("DELETE FROM images WHERE sample = 2", "rank 1: sample 2 image 0 has no row in images"),
    ("DELETE FROM samples WHERE sample = 2", "rank 1: sample 2 image 0 has no row in samples"),
])
def test_inconsistent_rows_name_their_feature_and_the_rest_goes_on(index_dir, damage, reason):
    con = duckdb.connect(str(index_dir / "index.duckdb"))
    con.execute(damage)
    con.close()
    with open_index(index_dir) as con:
        problems = {}
        many = feature_examples_many(con, [3, 5, 6], problems=problems)
        assert list(many) == [3, 6] and len(many[6]) == 1
        assert list(problems) == [5] and reason in problems[5]
        with pytest.raises(ValueError, match=r"^feature 5: rank 1"):
            feature_examples_many(con, [3, 5, 6])
        with pytest.raises(ValueError, match=r"^feature 5: rank 1"):
            feature_examples(con, 5)


def test_stats_and_selection_on_contract_columns_only(index_dir):
    with open_index(index_dir) as con:
        cols = {r[0] for r in con.execute("DESCRIBE features").fetchall()}
        assert "n_special_fires" not in cols  # a hand-built contract index
        s = feature_stats(con, 5)
        assert (s.n_fires, s.n_image_fires, s.n_text_fires, s.n_special_fires, s.n_examples) == (24, 24, 0, 0, 3)
        assert feature_stats(con, 9).n_text_fires == 5 and feature_stats(con, 9).n_examples == 0
        with_images = top_features(con, min_examples=1, order_by="frequency")
        assert {x.feature for x in with_images} == {3, 5, 6}  # alive with top images: not 9, not the dead
        freqs = [x.frequency for x in with_images]
        assert freqs == sorted(freqs, reverse=True) and with_images[-1].feature == 5  # 24 fires: the fewest
        assert [x.feature for x in top_features(con, order_by="feature")] == [3, 5, 6, 9]
        with pytest.raises(ValueError, match=r"^feature 16 is not in the index \(it has 16 features: 0\.\.15\)"):
            feature_stats(con, 16)
        with pytest.raises(ValueError, match=r"^features 16, 99 are not in the index"):
            require_features(con, [5, 99, 16])
        require_features(con, [0, 5, 15])  # dead features are in the index


def test_read_meta_keeps_a_value_that_is_not_json(index_dir):
    con = duckdb.connect(str(index_dir / "index.duckdb"))
    con.execute("INSERT INTO meta VALUES ('note', 'written by hand')")
    con.close()
    with open_index(index_dir) as con:
        meta = read_meta(con)
    assert meta["note"] == "written by hand" and meta["layer"] == 3 and meta["data"] == "world:n=8,seed=0"
    with pytest.raises(FileNotFoundError, match="no feature index"):
        open_index(index_dir / "elsewhere")


def test_index_source_opens_the_recorded_data_and_checks_its_images(index_dir, tmp_path):
    with open_index(index_dir) as con:
        meta = read_meta(con)
        example = feature_examples(con, 5)[0]
    source = index_source(meta)
    assert len(source) == 8 and source.prompt == "<image>"
    assert np.array_equal(np.asarray(example_image(source, example)), np.asarray(source.record(4).images[0]))
    folder = tmp_path / "images"
    folder.mkdir()
    example_image(source, example).save(folder / "a.png")
    recorded = index_source({"data": f"folder:{folder}", "prompt": "<image> look", "max_pixels": 5000})
    assert (len(recorded), recorded.prompt, recorded.max_pixels) == (1, "<image> look", 5000)
    assert len(index_source(meta, "world:n=3,seed=0")) == 3  # a spec replaces the recorded data
    assert index_source(meta, source) is source  # an opened source is used as it is
    with pytest.raises(ValueError, match="no 'data' source spec"):
        index_source({"prompt": "<image>"})
    with pytest.raises(ValueError, match=r"the source has id 'world-1-4' where the index has 'world-0-4'"):
        example_image(index_source(meta, "world:n=8,seed=1"), example)
    example.image_index = 1
    with pytest.raises(ValueError, match=r"sample 4 \(world-0-4\) has 1 images; the index refers to image 1"):
        example_image(source, example)
    example.image_index, example.width = 0, 80
    with pytest.raises(ValueError, match="image 0 is 64x64 in the source but 80x64 in the index"):
        example_image(source, example)
