"""`feature_sheet_from_index`: one feature's contact sheet, its top images read from an index and drawn by
mmsae.viz.feature_sheet (viz draws; reading the index is this package's job)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from PIL import Image

from mmsae.viz import feature_sheet

from .read import example_image, feature_examples, feature_stats, index_source, open_index, read_meta


def feature_sheet_from_index(index_dir: str | Path, feature: int, source=None, n: int | None = None,
                             **sheet_options) -> Image.Image:
    """The contact sheet of one feature read from an index (its n strongest top images; all by default).

    `source` replaces the index's data source (a spec string or an opened Source), e.g. moved files;
    `sheet_options` go to mmsae.viz.feature_sheet (cell, threshold, relative, alpha, cmap)."""
    with closing(open_index(index_dir)) as con:
        stats = feature_stats(con, feature)  # a clear error for a feature the index does not have
        meta = read_meta(con)
        examples = feature_examples(con, feature, n)
    src = index_source(meta, source)
    images = [example_image(src, e) for e in examples]
    title = (f"feature {feature}  freq {stats.frequency or 0:.3g}  max {stats.max_act or 0:.3g}  "
             f"image share {stats.image_share or 0:.2f}  layer {meta.get('layer', '?')}")
    return feature_sheet(examples, images, title=title, **sheet_options)
