"""The interpretation stage's statistics: per-feature scores read back from the index, the oracle explainer
on ideal concept features, and the intervals of the report's table."""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402

from mmsae.pipeline.interp import intervals, per_feature  # noqa: E402
from mmsae.pipeline.oracle import oracle_iou  # noqa: E402


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    maps = {0: concept_feature(0, 12, "mushroom"), 1: concept_feature(0, 12, "star"), 2: concept_feature(0, 12, "red")}
    return world_index(tmp_path_factory.mktemp("oracle") / "index", maps, n=12, n_latents=4)


def test_oracle_names_the_concept_of_an_ideal_feature(index_dir):
    o = oracle_iou(index_dir, [0, 1, 2, 3])
    best = o.best()
    assert [best[f][0] for f in (0, 1, 2)] == ["mushroom", "star", "red"]
    assert all(best[f][1] > 0.3 for f in (0, 1, 2))  # patch-sized regions on small objects: well below 1
    assert best[3][1] == 0.0  # a dead latent has no top images: nothing to overlap
    s = o.summary(0.2)
    assert s["explained"] == 3 and s["iou"] > 2 * s["iou_random_expl"]


def test_per_feature_reads_the_latest_scores(index_dir, tmp_path):
    import shutil

    import duckdb

    copy = tmp_path / "index"
    shutil.copytree(index_dir, copy)
    con = duckdb.connect(str(copy / "index.duckdb"))
    now = time.time()
    rows = [(0, "iou", 0.1, now - 10), (0, "iou", 0.6, now), (0, "iou_random_expl", 0.2, now), (1, "clip", 30.0, now),
            (2, "iou", 0.5, now)]
    con.executemany("INSERT INTO scores VALUES (?, ?, ?, 'object', '{}', 'm', ?)", rows)
    con.close()
    values = per_feature(copy, [0, 1])
    assert values == {0: {"iou": 0.6, "iou_random_expl": 0.2}, 1: {"clip": 30.0}}


def test_intervals_pair_scores_with_baselines_and_the_oracle():
    values = {f: {"iou": 0.2 + 0.1 * f, "iou_random_expl": 0.1, "clip": 30.0 + f} for f in range(6)}
    ci = intervals(values, {f: 0.5 + 0.1 * f for f in range(6)})
    mean, (lo, hi), n = ci["iou"]
    assert n == 6 and mean == pytest.approx(0.45) and lo < mean < hi
    assert ci["iou/iou_random_expl"][0] == pytest.approx(4.5)
    assert ci["oracle"][0] == pytest.approx(0.75) and ci["iou/oracle"][0] == pytest.approx(0.45 / 0.75)
    assert "iou_random_images" not in ci  # not scored: no row rather than a made-up value
