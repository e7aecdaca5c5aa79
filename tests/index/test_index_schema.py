"""The index owns its database: the schema version check, the writers of explanations and scores, and no
SQL anywhere outside mmsae.index."""

import ast
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_fixture import concept_feature, world_index  # noqa: E402

import mmsae  # noqa: E402
from mmsae.index import (  # noqa: E402
    SCHEMA_VERSION,
    ExplanationRow,
    ScoreRow,
    explained_features,
    explanation_counts,
    explanation_sets,
    open_index,
    read_explanations,
    read_scores,
    scored_keys,
    write_explanations,
    write_scores,
)
from mmsae.index.crossmodal import write_crossmodal  # noqa: E402

SRC = Path(mmsae.__file__).resolve().parent
SQL_CALLS = {"execute", "executemany", "sql", "query", "fetchall", "fetchone", "fetchmany", "fetchnumpy", "fetchdf",
             "fetch_arrow_table", "register"}


@pytest.fixture
def index(tmp_path):
    return world_index(tmp_path / "idx", {1: concept_feature(0, 12, "red", top=2)}, n=12, n_latents=4)


def _set_version(index, value):
    con = duckdb.connect(str(index / "index.duckdb"))
    con.execute("DELETE FROM meta WHERE key = 'schema_version'")
    if value is not None:
        con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [value])
    con.close()


def test_an_index_of_this_version_opens(index):
    con = open_index(index)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    con.close()


@pytest.mark.parametrize("value, found", [
    ("1", "schema version 1"), (str(SCHEMA_VERSION + 1), f"schema version {SCHEMA_VERSION + 1}"),
    (None, "no schema version (built before"), ('"two"', 'schema version "two"')])
def test_another_version_is_refused_with_what_to_do(index, value, found):
    _set_version(index, value)
    file = index / "index.duckdb"
    for read_only in (True, False):
        with pytest.raises(ValueError) as err:
            open_index(index, read_only=read_only)
        msg = str(err.value)
        assert str(file) in msg and found in msg and f"reads schema version {SCHEMA_VERSION}" in msg
        assert "rebuild it with `mmsae index`" in msg
    # the writers that open the index themselves refuse it too, before writing anything
    with pytest.raises(ValueError, match="rebuild it with `mmsae index`"):
        write_crossmodal(index, np.zeros(4), np.zeros(4), np.zeros(4), {})
    con = duckdb.connect(str(file), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "crossmodal" not in tables
    con.close()


def test_a_file_without_meta_is_refused(tmp_path):
    file = tmp_path / "index.duckdb"
    duckdb.connect(str(file)).close()
    with pytest.raises(ValueError, match="no schema version"):
        open_index(file)


def test_explanations_replace_their_set_and_scores_append(tmp_path):
    index = world_index(tmp_path / "bare", {1: concept_feature(0, 12, "red", top=2)}, n=12, n_latents=4,
                        with_explanations=False)
    con = open_index(index, read_only=False)
    assert explanation_sets(con) == [] and read_explanations(con, "m", "v") == {} and scored_keys(con) == set()
    write_explanations(con, [ExplanationRow(1, "failed", None, None, "timeout", "m", "v", 1.0),
                             ExplanationRow(2, "explained", "sky", "sky", None, "m", "v", 1.0),
                             ExplanationRow(1, "explained", "blue", "blue", None, "other", "v", 1.0)])
    assert explained_features(con, "m", "v") == {1, 2} and explained_features(con, "m", "v", include_failed=False) == {2}
    # a rerun of feature 1 for (m, v) replaces its row: no duplicates, the other set untouched
    write_explanations(con, [ExplanationRow(1, "explained", "red", "Red.", None, "m", "v", 2.0)])
    assert read_explanations(con, "m", "v") == {1: ("explained", "red", None), 2: ("explained", "sky", None)}
    assert explanation_counts(con, "m", "v") == {"explained": 2, "uninterpretable": 0, "failed": 0}
    assert [(s.model, s.n_explained) for s in explanation_sets(con)] == [("m", 2), ("other", 1)]
    with pytest.raises(ValueError, match="status must be one of .* got 'maybe'"):
        write_explanations(con, [ExplanationRow(3, "maybe", None, None, None, "m", "v", 3.0)])
    assert explained_features(con, "m", "v") == {1, 2}
    details = {"explainer": "m", "prompt_version": "v", "phrase": "red"}
    write_scores(con, [ScoreRow(1, "iou", 0.5, "colour", details, "seg", 3.0)])
    assert scored_keys(con) == {(1, "iou", "seg", "m", "v")}
    assert read_scores(con, "m", "v") == [(1, "iou", 0.5, "colour", "seg", details)] and read_scores(con, "x", "v") == []
    con.close()


def test_a_failing_write_leaves_nothing_behind(index):
    con = open_index(index, read_only=False)
    good = ScoreRow(1, "iou", 0.5, None, {"explainer": "m", "prompt_version": "v"}, "seg", 1.0)
    not_a_feature = ScoreRow("two", "iou", 0.1, None, {}, "seg", 1.0)  # fails in DuckDB, after `good` went in
    with pytest.raises(duckdb.Error):
        write_scores(con, [good, not_a_feature])
    assert scored_keys(con) == set()
    write_explanations(con, [ExplanationRow(1, "explained", "red", "red", None, "m", "v", 1.0)])
    # the rewrite deletes feature 1's row, then fails inserting: the old row is back
    with pytest.raises(duckdb.Error):
        write_explanations(con, [ExplanationRow(1, "explained", "blue", "blue", None, "m", "v", 2.0),
                                 ExplanationRow(2, "explained", "sky", "sky", None, "m", "v", "yesterday")])
    assert read_explanations(con, "m", "v") == {1: ("explained", "red", None)}
    con.close()


def sql_outside_the_index(path: Path, text: str) -> list[str]:
    """'file:line what' for every SQL call or duckdb import in one module's source."""
    out = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            out.append(f"{path}:{node.lineno} .{node.func.attr}()")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "duckdb" for a in node.names):
            out.append(f"{path}:{node.lineno} import duckdb")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "duckdb":
            out.append(f"{path}:{node.lineno} from duckdb import")
    return out


def test_the_scan_finds_sql():
    snippet = "import duckdb\ndef f(con):\n    return con.execute('SELECT 1').fetchall()\n"
    assert sql_outside_the_index(Path("x.py"), snippet) == ["x.py:1 import duckdb", "x.py:3 .fetchall()",
                                                           "x.py:3 .execute()"]
    assert sql_outside_the_index(Path("y.py"), "from mmsae.index import open_index\nopen_index('i')\n") == []


def test_no_module_outside_the_index_runs_sql():
    index_pkg = SRC / "index"
    modules = [p for p in SRC.rglob("*.py") if index_pkg not in p.parents]
    assert len(modules) > 50  # the scan sees the package
    found = [hit for p in modules for hit in sql_outside_the_index(p.relative_to(SRC.parent), p.read_text())]
    assert found == [], "SQL outside mmsae.index (add a typed reader or writer to mmsae.index):\n" + "\n".join(found)
