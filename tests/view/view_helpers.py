"""The viewer tests' shared constants and helpers (a module of its own, not conftest, so that test directories
collected together never import another directory's conftest under the same name)."""

from __future__ import annotations

import json
from pathlib import Path

TOKEN = "test-token-0123456789"
SCRIPT = '<script>window.pwned = 1</script>a red "thing" & co'
EXPLANATIONS = {  # feature -> (status, explanation)
    3: ("explained", "red objects"), 5: ("explained", "a diagonal line"), 6: ("uninterpretable", None),
    7: ("explained", SCRIPT),
}


def add_explanations_and_scores(index_dir: Path) -> None:
    import duckdb

    con = duckdb.connect(str(index_dir / "index.duckdb"))
    try:
        for f, (status, text) in EXPLANATIONS.items():
            con.execute("INSERT INTO explanations VALUES (?, ?, ?, ?, ?, 'zoo-explainer', 'zoo-v1', ?)",
                        [f, status, text, text, None if text else "unable to interpret", 100.0 + f])
        rows = [(3, "iou", 0.62, "colour"), (3, "iou_random_images", 0.05, "colour"), (3, "clip", 0.31, "colour"),
                (3, "clip_random", 0.22, "colour"), (5, "iou", 0.2, "position"), (7, "iou", 0.4, "colour")]
        con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, 'tiny-sam', 200.0)",
                        [(f, m, v, c, json.dumps({"trials": 10})) for f, m, v, c in rows])
        con.execute("INSERT INTO text_contexts VALUES (3, 0, 1, 4, 'red', 2.5, 'a <<red>> circle'), "
                    "(3, 1, 2, 5, 'red', 1.0, 'the <<red>> square on <b>top</b>')")
    finally:
        con.close()
    add_crossmodal(index_dir)


def add_crossmodal(index_dir: Path) -> None:
    """SAE-V cross-modal weights through the index's own writer: feature 3 weighted 0.42, feature 5 null."""
    import numpy as np

    from mmsae.index.crossmodal import write_crossmodal

    w = np.full(16, np.nan)
    w[3], w[7] = 0.42, -0.1
    n_text, n_image = np.full(16, 5), np.full(16, 25)
    n_text[5] = 1
    write_crossmodal(index_dir, w, n_text, n_image, {"k": 30, "min_modality": 5, "pairs": 5})


def png_bytes(size=(40, 30), colour=(200, 30, 30), fmt="PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()
