import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Builds (once per session) a tiny random model of a family; returns its directory."""
    from mmsae.models import tiny

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = getattr(tiny, f"build_{family}")(tmp_path_factory.mktemp(family))
        return made[family]

    return get


@pytest.fixture(scope="session")
def adapter_of(tiny_dir):
    from mmsae.models import load_adapter

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = load_adapter(tiny_dir(family))
        return made[family]

    return get


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


def check_marker_geometry(table, patch_pixels, marker, min_tokens: int = 1, image_size=None) -> int:
    """Marker test: every image token whose pixel box (original coordinates) lies inside the red
    marker sees a red processed patch; every token whose box is clear of the marker (beyond the
    resampling kernel's reach) sees none; tokens overlapping it by >= 1 processed pixel see some.
    `patch_pixels(position)` returns the processed RGB patch (uint8-scaled) the model saw there."""
    from mmsae.models import IMAGE

    mx0, my0, mx1, my1 = marker
    n_inside = 0
    checked = 0
    for pos in np.flatnonzero(table.modality == IMAGE):
        box = table.box[pos]
        if np.isnan(box).any():
            continue
        rgb = patch_pixels(int(pos))
        red = _is_red(rgb)
        scale_x = (box[2] - box[0]) / rgb.shape[1]  # original px per processed px (clipped boxes: approx)
        scale_y = (box[3] - box[1]) / rgb.shape[0]
        ox = min(box[2], mx1) - max(box[0], mx0)
        oy = min(box[3], my1) - max(box[1], my0)
        gap_x = max(mx0 - box[2], box[0] - mx1)
        gap_y = max(my0 - box[3], box[1] - my1)
        # resampling blurs 2 processed px across the marker's edges, but not across the image's
        w, h = image_size or (np.inf, np.inf)
        lo_x, hi_x = (mx0 + 2 * scale_x if mx0 > 0 else -1), (mx1 - 2 * scale_x if mx1 < w else np.inf)
        lo_y, hi_y = (my0 + 2 * scale_y if my0 > 0 else -1), (my1 - 2 * scale_y if my1 < h else np.inf)
        if box[0] >= lo_x and box[2] <= hi_x and box[1] >= lo_y and box[3] <= hi_y:
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


@pytest.fixture
def marker_check():
    return check_marker_geometry


def unnormalize(chw: np.ndarray, ip) -> np.ndarray:
    mean = np.array(ip.image_mean, np.float64)[:, None, None]
    std = np.array(ip.image_std, np.float64)[:, None, None]
    return ((chw * std + mean) * 255.0).transpose(1, 2, 0)
