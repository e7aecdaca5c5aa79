"""mmsae.index.browse on an index of 2^17 features (built in SQL): search, sorts, filters and pages against a
reference computed in numpy, the latest explanation and score per feature, and missing optional tables."""

import duckdb
import numpy as np
import pytest

from mmsae.index import browse

F = 2**17


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "index.duckdb"
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE features AS SELECT i::INTEGER AS feature, (i * 7919 % 1000)::BIGINT AS n_fires,
        0::BIGINT AS n_image_fires, 0::BIGINT AS n_text_fires, (i * 7919 % 1000) / 1e6 AS frequency,
        1.0 AS mean_act, (i % 97)::DOUBLE AS max_act,
        CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 13) / 12.0 END AS image_share, 0::BIGINT AS n_special_fires
        FROM range(?) t(i)""", [F])
    con.execute("""CREATE TABLE explanations AS SELECT i::INTEGER AS feature,
        CASE WHEN i % 3 = 0 THEN 'uninterpretable' ELSE 'explained' END AS status,
        CASE WHEN i % 3 = 0 THEN NULL WHEN i % 11 = 0 THEN 'stripes of 50% red_ish' ELSE 'concept ' || i END AS explanation,
        NULL::VARCHAR AS raw, NULL::VARCHAR AS reason, 'm' AS model, 'v1' AS prompt_version, 1.0 AS created
        FROM range(0, ?, 2) t(i)""", [F])
    # a later failed attempt does not hide an explanation; a later explanation replaces an earlier one
    con.execute("INSERT INTO explanations VALUES (2, 'failed', NULL, NULL, 'timeout', 'm', 'v2', 9.0), "
                "(4, 'explained', 'newer text', NULL, NULL, 'm', 'v2', 9.0)")
    con.execute("""CREATE TABLE scores AS SELECT i::INTEGER AS feature, 'iou' AS metric, (i % 1000) / 1000.0 AS value,
        CASE WHEN i % 16 = 0 THEN 'colour' ELSE 'object' END AS concept_class, '{}' AS details, 's' AS model,
        1.0 AS created FROM range(0, ?, 8) t(i)""", [F])
    con.execute("""CREATE TABLE crossmodal AS SELECT i::INTEGER AS feature,
        CASE WHEN i % 12 = 0 THEN NULL ELSE (i % 101) / 100.0 - 0.5 END AS weight, 5 AS n_text, 5 AS n_image
        FROM range(0, ?, 4) t(i)""", [F])
    con.close()
    con = duckdb.connect(str(path), read_only=True)
    yield con
    con.close()


def test_sorted_pages_match_a_reference(big):
    i = np.arange(F)
    fires = i * 7919 % 1000
    alive = fires >= 1
    page = browse.list_features(big, sort="frequency", page=3, per_page=100)
    order = sorted(i[alive], key=lambda f: (-fires[f], f))
    assert page.total == alive.sum() and [r.feature for r in page.rows] == order[200:300]
    iou = browse.list_features(big, sort="iou", per_page=50)
    scored = [f for f in i[alive] if f % 8 == 0]
    assert [r.feature for r in iou.rows] == sorted(scored, key=lambda f: (-(f % 1000), f))[:50]
    last = browse.list_features(big, sort="iou", per_page=500, page=-(-alive.sum() // 500))
    assert last.rows[-1].iou is None  # unscored features go last, in both directions
    lowest = browse.list_features(big, sort="iou", descending=False, per_page=1).rows[0]
    assert lowest.feature == min(scored, key=lambda f: (f % 1000, f))
    share = browse.list_features(big, sort="text_share", per_page=5)
    assert all(r.image_share == 0.0 for r in share.rows)
    cross = browse.list_features(big, sort="crossmodal", per_page=40)
    weighted = [f for f in i[alive] if f % 4 == 0 and f % 12 != 0]
    ref = sorted(weighted, key=lambda f: (-((f % 101) / 100.0 - 0.5), f))[:40]
    assert [r.feature for r in cross.rows] == ref
    assert cross.rows[0].crossmodal == pytest.approx((ref[0] % 101) / 100.0 - 0.5)
    past = browse.list_features(big, per_page=500, page=10_000)
    assert past.rows == [] and past.total == alive.sum()


def test_search_and_filters(big):
    hits = browse.list_features(big, query="50% red_", per_page=500)
    assert hits.total == sum(1 for f in range(0, F, 2) if f % 3 and f % 11 == 0 and f * 7919 % 1000 >= 1)
    assert all(r.explanation == "stripes of 50% red_ish" for r in hits.rows)
    assert browse.list_features(big, query="50%x").total == 0  # % and _ are literal, not wildcards
    assert [r.feature for r in browse.list_features(big, query="#1234").rows] == [1234]
    assert browse.list_features(big, query="Concept 10", sort="feature").rows[0].explanation.lower().startswith("concept 10")
    unexplained = browse.list_features(big, status="unexplained", sort="feature", per_page=3)
    assert [r.feature for r in unexplained.rows] == [1, 3, 5]
    uninterp = browse.list_features(big, status="uninterpretable", sort="feature", per_page=2)
    assert [r.feature for r in uninterp.rows] == [6, 12]  # 0 is dead (0 fires)
    colour = browse.list_features(big, concept="colour", sort="feature", per_page=2)
    assert [r.feature for r in colour.rows] == [16, 32] and colour.rows[0].concept_class == "colour"
    assert browse.concept_classes(big) == ["colour", "object"]


def test_latest_explanation_wins_and_failures_do_not_hide_one(big):
    rows = {r.feature: r for r in browse.list_features(big, sort="feature", per_page=10).rows}
    assert (rows[2].status, rows[2].explanation) == ("explained", "concept 2")
    assert rows[4].explanation == "newer text"
    assert [e.status for e in browse.feature_explanations(big, 2)] == ["failed", "explained"]


def test_bad_arguments_are_named(big):
    for kwargs, msg in (({"sort": "x"}, "sort must be one of"), ({"status": "x"}, "status must be one of"),
                        ({"per_page": 0}, "per_page must be in"), ({"page": 0}, "page must be >= 1")):
        with pytest.raises(ValueError, match=msg):
            browse.list_features(big, **kwargs)


def test_an_index_without_explanations_or_scores(tmp_path):
    con = duckdb.connect(str(tmp_path / "i.duckdb"))
    con.execute("CREATE TABLE features AS SELECT 1::INTEGER AS feature, 3::BIGINT AS n_fires, 0.1 AS frequency, "
                "2.0 AS max_act, 0.5 AS image_share")
    page = browse.list_features(con, sort="iou")
    assert [(r.feature, r.status, r.iou) for r in page.rows] == [(1, "unexplained", None)]
    assert browse.feature_scores(con, 1) == [] and browse.feature_explanations(con, 1) == []
    assert browse.concept_classes(con) == [] and browse.list_features(con, query="x").total == 0
