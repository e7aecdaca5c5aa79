"""Feature contact sheets, drawn from Examples and read from a (hand-built) feature index through mmsae.index."""

import duckdb
import numpy as np
import pytest
from PIL import Image

from index_fixture import concept_feature, world_index
from mmsae.index import Example
from mmsae.viz import feature_sheet, feature_sheet_from_index, save_png, sheet_size


def _top(rank: int, acts_GG: np.ndarray) -> Example:
    r, c = np.divmod(np.arange(64), 8)
    boxes = np.stack([c * 8, r * 8, (c + 1) * 8, (r + 1) * 8], axis=1).astype(float)
    peak = float(acts_GG.max())
    return Example(1, rank, rank, f"s{rank}", 0, peak, float(acts_GG.mean()), peak, 64, 64,
                   acts_GG.ravel().astype(np.float32), np.zeros(64, np.int32), r.astype(np.int32),
                   c.astype(np.int32), boxes)


def test_sheet_has_the_expected_size_and_panels():
    acts = np.zeros((8, 8), np.float32)
    acts[0, 0] = 2.0
    image = Image.new("RGB", (64, 64), (200, 100, 50))
    sheet = feature_sheet([_top(0, acts), _top(1, acts * 0.5)], [image, image], title="feature 1", cell=128)
    assert sheet.size == sheet_size(2, 128)
    w, h = sheet.size
    assert w == 6 + 3 * (128 + 6) and h > 2 * 128
    px = np.asarray(sheet)
    y0 = 22 + 14 + 14  # first row's panels start under the title, column header and row label
    masked_x0 = 6 + 2 * (128 + 6)
    assert tuple(px[y0 + 5, masked_x0 + 5]) == (200, 100, 50)  # the active patch (scaled x2) stays visible
    assert tuple(px[y0 + 100, masked_x0 + 100]) == (0, 0, 0)  # everything else is black
    assert tuple(px[y0 + 100, 6 + 100]) == (200, 100, 50)  # the original column is untouched
    assert feature_sheet([], [], title="empty").size == sheet_size(0)
    with pytest.raises(ValueError, match="2 examples but 1 images"):
        feature_sheet([_top(0, acts), _top(1, acts)], [image])


def test_save_png_is_atomic_and_lossless(tmp_path):
    img = Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    path = save_png(img, tmp_path / "sub" / "f.png")
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(img))
    assert [p.name for p in path.parent.iterdir()] == ["f.png"]  # no temporary left behind


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
