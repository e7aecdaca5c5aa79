"""What the pages read: one read-only connection to the index (a cursor per request, DuckDB's way to share a
connection between threads), the indexed data source for original images, and the rendered PNGs."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..index import browse
from ..index.crossmodal import feature_crossmodal
from ..index.read import (
    example_image,
    feature_examples,
    feature_stats,
    has_feature,
    index_source,
    open_index,
    read_meta,
    resolve_paths,
    text_contexts,
)

VIEWS = ("plain", "heatmap", "masked")


class NotFound(LookupError):
    """Something the request names that the index does not have (shown as a 404 page)."""


class _LRU:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class IndexView:
    def __init__(self, index: str | Path, source=None):
        self.path = Path(index)
        self.con = open_index(self.path, read_only=True)
        self._con_lock = threading.Lock()
        self.meta = resolve_paths(read_meta(self.con), self.path if self.path.is_dir() else self.path.parent)
        self._source_spec = source
        self._source = None
        self._source_lock = threading.Lock()
        self._images = _LRU(256)
        self._pngs = _LRU(512)

    def close(self) -> None:
        """Close the connection (at server shutdown); a later request opens it again."""
        with self._con_lock:
            if self.con is not None:
                self.con.close()
                self.con = None

    @contextmanager
    def cursor(self):
        with self._con_lock:
            if self.con is None:
                self.con = open_index(self.path, read_only=True)
            cur = self.con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    # -- pages' data -------------------------------------------------------------------------------------

    def feature(self, feature: int, n_images: int = 12, n_contexts: int = 20) -> dict:
        with self.cursor() as con:
            if not has_feature(con, feature):
                raise NotFound(f"feature {feature} is not in the index (it has {browse.n_features(con)} features)")
            stats = feature_stats(con, feature)
            examples = feature_examples(con, feature, n_images)
            contexts = text_contexts(con, feature, n_contexts)
            counts, edges, n_hist = browse.activation_histogram(con, feature)
            return {"stats": stats, "examples": examples, "contexts": contexts,
                    "explanations": browse.feature_explanations(con, feature),
                    "scores": browse.feature_scores(con, feature),
                    "crossmodal": feature_crossmodal(con, feature),
                    "histogram": {"counts": counts.tolist(), "edges": edges.tolist(), "n": n_hist}}

    # -- images ------------------------------------------------------------------------------------------

    def original(self, ref) -> "Image.Image":  # noqa: F821
        """The original image of an indexed (sample, image_index), checked against the index."""
        def load():
            with self._source_lock:  # sources need not be thread-safe
                return example_image(self._opened_source(), ref)
        return self._images.get((ref.sample, ref.image_index), load)

    def _opened_source(self):
        if self._source is None:
            self._source = index_source(self.meta, self._source_spec)
        return self._source

    def example_png(self, feature: int, rank: int, view: str) -> bytes:
        """A top image of a feature as PNG: plain, heatmap (one scale per feature) or masked (the paper's)."""
        if view not in VIEWS:
            raise NotFound(f"unknown view {view!r}; views are {', '.join(VIEWS)}")

        def render():
            from ..viz import heatmap_overlay, masked_image

            with self.cursor() as con:
                examples = feature_examples(con, feature)  # [] for a feature the index does not have
            match = [e for e in examples if e.rank == rank]
            if not match:
                raise NotFound(f"feature {feature} has no top image of rank {rank}")
            ex = match[0]
            image = self.original(ex)
            if view == "heatmap":
                vmax = max((float(np.max(e.acts)) for e in examples if len(e.acts)), default=0.0) or None
                image = heatmap_overlay(image, ex.box, ex.acts, alpha=0.55, vmax=vmax)
            elif view == "masked":
                image = masked_image(image, ex.box, ex.acts, threshold=0.0)
            return png(image)
        return self._pngs.get((feature, rank, view), render)

    def record_png(self, sample: int, image_index: int) -> bytes:
        def render():
            with self.cursor() as con:
                row = browse.image_ref(con, sample, image_index)
            if row is None:
                raise NotFound(f"image {image_index} of record {sample} is not in the index")
            return png(self.original(_Ref(sample, image_index, *row)))
        return self._pngs.get(("record", sample, image_index), render)

    def record_image(self, sample: int, image_index: int):
        with self.cursor() as con:
            row = browse.image_ref(con, sample, image_index)
        if row is None:
            raise NotFound(f"image {image_index} of record {sample} is not in the index")
        return self.original(_Ref(sample, image_index, *row))


class _Ref:
    def __init__(self, sample, image_index, sample_id, width, height):
        self.sample, self.image_index, self.sample_id, self.width, self.height = (
            sample, image_index, sample_id, width, height)


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
