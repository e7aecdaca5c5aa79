"""A feature's contact sheet read from a (hand-built) feature index: mmsae.index.feature_sheet_from_index
(the drawing itself: tests/viz/test_viz_sheet.py)."""

import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402

from mmsae.index import feature_sheet_from_index  # noqa: E402
from mmsae.viz import sheet_size  # noqa: E402


@pytest.fixture
def index_dir(tmp_path):
    maps = {3: concept_feature(0, 6, "red", top=2),
            5: [(4, np.eye(8, dtype=np.float32) * 2.0), (2, np.eye(8, dtype=np.float32))]}
    return world_index(tmp_path / "idx", maps, n=6)


def test_sheet_from_index_uses_the_indexed_images(index_dir):
    sheet = feature_sheet_from_index(index_dir, 5, cell=64)
    assert sheet.size == sheet_size(2, 64)
    from mmsae.world import World

    px = np.asarray(sheet)
    y0 = 22 + 14 + 14
    assert np.array_equal(px[y0:y0 + 64, 6:6 + 64], World()[4].image)  # the original of rank 0 is scene 4
    assert feature_sheet_from_index(index_dir, 5, n=1, cell=64).size == sheet_size(1, 64)
    with pytest.raises(ValueError, match=r"feature 99 is not in the index \(it has 16 features"):
        feature_sheet_from_index(index_dir, 99)
    with pytest.raises(ValueError, match="world-1-4"):  # another seed is not the indexed data
        feature_sheet_from_index(index_dir, 5, source="world:n=6,seed=1")


def test_an_inconsistent_patch_map_is_named(index_dir):
    con = duckdb.connect(str(index_dir / "index.duckdb"))
    con.execute("UPDATE patch_maps SET ords = [70] , acts = [1.0] WHERE feature = 5 AND rank = 1")
    con.close()
    with pytest.raises(ValueError, match="feature 5: rank 1: sample 2 image 0: .* 64 image tokens"):
        feature_sheet_from_index(index_dir, 5)
    assert feature_sheet_from_index(index_dir, 5, n=1, cell=64).size == sheet_size(1, 64)  # rank 0 is sound


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no feature index"):
        feature_sheet_from_index(tmp_path, 0)
