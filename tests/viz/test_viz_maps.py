"""Activation maps painted into original pixels: masks, overlapping tiles, thresholds, heatmaps."""

import numpy as np
import pytest
from PIL import Image

from mmsae.viz import activation_map, heatmap_overlay, masked_image, visible_mask


def _grid_boxes(cols: int, rows: int, patch: int) -> np.ndarray:
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([c * patch, r * patch, (c + 1) * patch, (r + 1) * patch], axis=1).astype(float)


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(1, 256, (24, 32, 3), dtype=np.uint8))  # no pure-black pixel


def test_mask_keeps_exactly_the_pixels_of_activated_boxes(photo):
    boxes = _grid_boxes(4, 3, 8)  # 12 patches of 8 px over a 32 x 24 image
    acts = np.zeros(12)
    acts[[0, 5, 11]] = [0.3, 2.0, 1.0]
    out = np.asarray(masked_image(photo, boxes, acts))
    want = np.zeros((24, 32), bool)
    for i in (0, 5, 11):
        x0, y0, x1, y1 = boxes[i].astype(int)
        want[y0:y1, x0:x1] = True
    src = np.asarray(photo)
    assert out.shape == src.shape
    assert np.array_equal(out[want], src[want])
    assert (out[~want] == 0).all()


def test_dim_keeps_a_fraction_of_inactive_pixels(photo):
    boxes, acts = _grid_boxes(4, 3, 8), np.r_[1.0, np.zeros(11)]
    out = np.asarray(masked_image(photo, boxes, acts, dim=0.5)).astype(int)
    src = np.asarray(photo).astype(int)
    assert np.array_equal(out[:8, :8], src[:8, :8])
    assert np.abs(out[8:, :] - np.round(src[8:, :] * 0.5)).max() <= 1


def test_overlapping_tiles_combine_by_max():
    # an AnyRes-like image: one base view over the whole 16 x 16 image plus four high-res tiles
    base = np.array([[0, 0, 16, 16]], float)
    tiles = np.array([[0, 0, 8, 8], [8, 0, 16, 8], [0, 8, 8, 16], [8, 8, 16, 16]], float)
    boxes = np.concatenate([base, tiles])
    acts = np.array([1.0, 0.5, 3.0, 0.0, 2.0])
    m = activation_map((16, 16), boxes, acts)
    assert m.shape == (16, 16)
    assert (m[:8, :8] == 1.0).all()  # base beats the weaker tile
    assert (m[:8, 8:] == 3.0).all()
    assert (m[8:, :8] == 1.0).all()  # tile silent: the base view still counts
    assert (m[8:, 8:] == 2.0).all()


def test_fractional_boxes_tile_without_gaps_and_nan_boxes_are_ignored():
    # a 10-px wide image cut into 3 patches of 10/3 px (an image resized by the processor)
    w = 10 / 3
    boxes = np.array([[0, 0, w, 5], [w, 0, 2 * w, 5], [2 * w, 0, 10, 5], [np.nan] * 4])
    m = activation_map((10, 5), boxes, [1.0, 2.0, 3.0, 9.0])
    assert (m > 0).all()  # every pixel painted exactly by the patch holding its centre
    assert list(m[0]) == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]  # cuts at 3.33 and 6.67
    assert m.max() == 3.0  # the NaN box (a newline token) paints nothing


def test_thresholds_absolute_and_relative():
    boxes = _grid_boxes(4, 1, 4)
    acts = np.array([0.5, 1.0, 2.0, 4.0])
    absolute = visible_mask((16, 4), boxes, acts, threshold=1.0)
    assert absolute[0, ::4].tolist() == [False, False, True, True]  # strictly above 1.0
    relative = visible_mask((16, 4), boxes, acts, threshold=0.4, relative=True)  # above 0.4 * 4 = 1.6
    assert relative[0, ::4].tolist() == [False, False, True, True]
    assert visible_mask((16, 4), boxes, acts, threshold=0.0)[0, ::4].all()
    with pytest.raises(ValueError, match="fraction"):
        visible_mask((16, 4), boxes, acts, threshold=1.5, relative=True)
    with pytest.raises(ValueError, match="4 boxes but 3 activations"):
        masked_image(Image.new("RGB", (16, 4)), boxes, acts[:3])


def test_heatmap_keeps_image_size_and_marks_hot_patches(photo):
    boxes, acts = _grid_boxes(4, 3, 8), np.r_[np.zeros(11), 5.0]
    out = heatmap_overlay(photo, boxes, acts)
    assert out.size == photo.size and out.mode == "RGB"
    assert np.array_equal(np.asarray(heatmap_overlay(photo, boxes, acts, alpha=0.0)), np.asarray(photo))
    pure = np.asarray(heatmap_overlay(photo, boxes, acts, alpha=1.0)).astype(int)
    assert pure[20, 28].sum() > 600 and pure[0, 0].sum() < 30  # inferno: hot is near white, cold near black
    with pytest.raises(ValueError, match="unknown colormap"):
        heatmap_overlay(photo, boxes, acts, cmap="nope")
