"""Feature contact sheets drawn from Examples and images (reading them from an index: tests/index/test_index_sheet.py)."""

import numpy as np
import pytest
from PIL import Image

from mmsae.index import Example
from mmsae.viz import feature_sheet, save_png, sheet_size


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
