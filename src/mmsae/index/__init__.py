"""The feature index: per SAE feature, its top images (with per-patch activation maps over every
tile), its top text-token contexts and its statistics, streamed in bounded memory into DuckDB.

    from mmsae.index import IndexConfig, build_index, open_index, feature_examples, top_features
    build_index(IndexConfig(out="idx", sae="sae-dir", data="world:n=1000,seed=0"))
    con = open_index("idx")
    for f in top_features(con, min_examples=5, limit=10):
        examples = feature_examples(con, f.feature)  # Example.acts is a dense map over the image's tokens
    many = feature_examples_many(con, [1, 2, 3], n=5)  # {feature: [Example]}, in two queries
    image = example_image(index_source(read_meta(con)), many[1][0])  # the original image, checked

Everything that reads an index (explain, score, viz) reads it through these functions.

Schema: see mmsae.index.db (the contract in the project notes, plus features.n_special_fires and
images.n_patches).
"""

from .build import IndexConfig, build_index
from .db import INDEX_FILE, SCHEMA
from .read import (
    Example,
    FeatureStats,
    TextContext,
    example_image,
    feature_examples,
    feature_examples_many,
    feature_stats,
    index_source,
    open_index,
    read_meta,
    require_features,
    resolve_paths,
    text_contexts,
    top_features,
)

__all__ = [
    "INDEX_FILE",
    "SCHEMA",
    "Example",
    "FeatureStats",
    "IndexConfig",
    "TextContext",
    "build_index",
    "example_image",
    "feature_examples",
    "feature_examples_many",
    "feature_stats",
    "index_source",
    "open_index",
    "read_meta",
    "require_features",
    "resolve_paths",
    "text_contexts",
    "top_features",
]
