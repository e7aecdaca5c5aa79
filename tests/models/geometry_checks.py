"""Marker-based geometry checks shared by the model adapter tests (unique module name: tests/
directories have no __init__.py, so `conftest` would be ambiguous across folders)."""

import numpy as np
from PIL import Image


def marker_image(w: int, h: int, box: tuple[int, int, int, int], base=None) -> Image.Image:
    """Grey (or the given photo) with a pure red rectangle [x0, x1) x [y0, y1)."""
    arr = np.full((h, w, 3), 128, np.uint8) if base is None else np.array(base.resize((w, h)))
    if base is not None:
        arr[..., 0] = np.minimum(arr[..., 0], 150)  # keep the photo itself clearly non-red
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = (255, 0, 0)
    return Image.fromarray(arr)


def _is_red(rgb_HW3: np.ndarray) -> np.ndarray:
    return (rgb_HW3[..., 0] > 200) & (rgb_HW3[..., 1] < 80) & (rgb_HW3[..., 2] < 80)


def check_marker_geometry(table, patch_pixels, marker, min_tokens: int = 1, image_size=None,
                          image_index: int = 0) -> int:
    """Marker test: every image token whose pixel box (original coordinates) lies inside the red
    marker sees a red processed patch; every token whose box is clear of the marker (beyond the
    resampling kernel's reach) sees none; tokens overlapping it by >= 1 processed pixel see some.
    `patch_pixels(position)` returns the processed RGB patch (uint8-scaled) the model saw there."""
    from mmsae.models import IMAGE

    mx0, my0, mx1, my1 = marker
    n_inside = 0
    checked = 0
    sel = (table.modality == IMAGE) & (table.image_index == image_index) & ~np.isnan(table.box[:, 0])
    size_N2 = table.box[:, 2:] - table.box[:, :2]
    full = {t: size_N2[sel & (table.tile == t)].max(0) for t in set(table.tile[sel].tolist())}
    for pos in np.flatnonzero(sel):
        box = table.box[pos]
        # a box clipped by padding covers only part of its patch: only the "far" rule applies
        clipped = (size_N2[pos] < 0.99 * full[int(table.tile[pos])]).any()
        rgb = patch_pixels(int(pos))
        red = _is_red(rgb)
        fw, fh = full[int(table.tile[pos])]
        scale_x, scale_y = fw / rgb.shape[1], fh / rgb.shape[0]  # original px per processed px
        ox = min(box[2], mx1) - max(box[0], mx0)
        oy = min(box[3], my1) - max(box[1], my0)
        gap_x = max(mx0 - box[2], box[0] - mx1)
        gap_y = max(my0 - box[3], box[1] - my1)
        # resampling blurs 2 processed px across the marker's edges, but not across the image's
        w, h = image_size or (np.inf, np.inf)
        lo_x, hi_x = (mx0 + 2 * scale_x if mx0 > 0 else -1), (mx1 - 2 * scale_x if mx1 < w else np.inf)
        lo_y, hi_y = (my0 + 2 * scale_y if my0 > 0 else -1), (my1 - 2 * scale_y if my1 < h else np.inf)
        if clipped:
            if gap_x > 3 * scale_x or gap_y > 3 * scale_y:
                assert not red.any(), f"token {pos} box {box} far from marker {marker} but patch has red"
        elif box[0] >= lo_x and box[2] <= hi_x and box[1] >= lo_y and box[3] <= hi_y:
            assert red.mean() > 0.9, f"token {pos} box {box} inside marker but patch not red"
            n_inside += 1
        elif gap_x > 3 * scale_x or gap_y > 3 * scale_y:
            assert not red.any(), f"token {pos} box {box} far from marker {marker} but patch has red"
        elif ox >= 1.5 * scale_x and oy >= 1.5 * scale_y:
            assert red.any(), f"token {pos} box {box} overlaps marker {marker} but patch has no red"
        checked += 1
    assert checked > 0
    assert n_inside >= min_tokens, f"only {n_inside} tokens found inside the marker"
    return n_inside


def unnormalize(chw: np.ndarray, ip) -> np.ndarray:
    mean = np.array(ip.image_mean, np.float64)[:, None, None]
    std = np.array(ip.image_std, np.float64)[:, None, None]
    return ((chw * std + mean) * 255.0).transpose(1, 2, 0)
