"""The feature index: per SAE feature, its top images (with per-patch activation maps over every
tile), its top text-token contexts and its statistics, streamed in bounded memory into DuckDB.

    from mmsae.index import IndexConfig, build_index, open_index, feature_examples, top_features
    build_index(IndexConfig(out="idx", sae="sae-dir", data="world:n=1000,seed=0"))
    con = open_index("idx")
    for f in top_features(con, min_examples=5, limit=10):
        examples = feature_examples(con, f.feature)  # Example.acts is a dense map over the image's tokens
    many = feature_examples_many(con, [1, 2, 3], n=5)  # {feature: [Example]}, in two queries
    image = example_image(index_source(read_meta(con)), many[1][0])  # the original image, checked
    sheet = feature_sheet_from_index("idx", 3, n=5)  # its contact sheet, drawn by mmsae.viz.feature_sheet

    write_explanations(con, [ExplanationRow(...)])  # explain's rows; write_scores(con, [ScoreRow(...)])
    sets = explanation_sets(con)  # and read_explanations, scored_keys, read_scores, score_values, ...

This package is the only owner of index.duckdb: everything that reads or writes an index (explain, score,
view, pipeline) does it through these functions, and no module outside it runs SQL on the index.

Schema: mmsae.index.db.TABLES (the contract in the project notes, plus features.n_special_fires and
images.n_patches), versioned by meta's `schema_version` (db.SCHEMA_VERSION); open_index refuses an index
of another version.

May import (the layers of pyproject.toml's importlinter contract): train, evals, sae, store, models, data,
world, viz, io, util, defaults.
"""

from .build import IndexConfig, build_index
from .db import INDEX_FILE, SCHEMA, SCHEMA_VERSION
from .read import (
    Example,
    FeatureStats,
    TextContext,
    example_image,
    feature_examples,
    feature_examples_many,
    feature_ids,
    feature_max_acts,
    feature_stats,
    has_feature,
    index_file,
    index_source,
    open_index,
    read_meta,
    require_features,
    resolve_paths,
    text_contexts,
    top_features,
)
from .results import (
    ExplanationSet,
    ScoredExplanation,
    best_explained,
    explained_features,
    explanation_counts,
    explanation_sets,
    read_explanations,
    read_scores,
    score_values,
    scored_keys,
)
from .sheet import feature_sheet_from_index
from .write import EXPLANATION_STATUSES, ExplanationRow, ScoreRow, write_explanations, write_scores

__all__ = [
    "EXPLANATION_STATUSES",
    "INDEX_FILE",
    "SCHEMA",
    "SCHEMA_VERSION",
    "ExplanationRow",
    "ExplanationSet",
    "ScoreRow",
    "ScoredExplanation",
    "best_explained",
    "explained_features",
    "explanation_counts",
    "explanation_sets",
    "read_explanations",
    "read_scores",
    "score_values",
    "scored_keys",
    "write_explanations",
    "write_scores",
    "feature_ids",
    "feature_max_acts",
    "has_feature",
    "index_file",
    "Example",
    "FeatureStats",
    "IndexConfig",
    "TextContext",
    "build_index",
    "example_image",
    "feature_examples",
    "feature_examples_many",
    "feature_sheet_from_index",
    "feature_stats",
    "index_source",
    "open_index",
    "read_meta",
    "require_features",
    "resolve_paths",
    "text_contexts",
    "top_features",
]
