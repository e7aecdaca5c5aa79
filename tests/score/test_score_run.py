import json

import duckdb
import numpy as np
import pytest
from index_fixture import concept_acts, concept_feature, world_index
from score_fakes import OracleWorldJudge

from mmsae.data import open_source
from mmsae.score import ClipScorer, DetectionJudge, ImagePool, ScoreConfig, Scorers, WorldSegmenter, run_score
from mmsae.score.pool import PoolImage
from mmsae.world import World

N, SEED = 40, 0
CONCEPTS = {0: "red", 1: "grass", 2: "star", 3: "red"}  # the concept each feature truly fires on


def make_index(tmp_path):
    maps = {f: concept_feature(SEED, N, c, top=3) for f, c in CONCEPTS.items()}
    maps[4] = concept_feature(SEED, N, "sky", top=3)
    maps[5] = concept_feature(SEED, N, "tree", top=3)
    root = world_index(tmp_path / "idx", maps, n=N, seed=SEED, n_latents=8, text_only=(6,))
    rows = [(0, "explained", "red", "red", None, "zoo-explainer", "zoo-v1", 1.0),
            (1, "explained", "grass", "grass", None, "zoo-explainer", "zoo-v1", 1.0),
            (2, "explained", "star", "star", None, "zoo-explainer", "zoo-v1", 1.0),
            (3, "explained", "a blurry thing", "a blurry thing", None, "zoo-explainer", "zoo-v1", 1.0),
            (4, "uninterpretable", None, "unable to interpret", None, "zoo-explainer", "zoo-v1", 1.0),
            (6, "explained", "red", "red", None, "zoo-explainer", "zoo-v1", 1.0),
            (0, "explained", "sky", "sky", None, "other-explainer", "paper-v1", 2.0)]  # a smaller second set
    con = duckdb.connect(str(root / "index.duckdb"))
    con.executemany("INSERT INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.close()
    return root


GRID_BOXES = np.array([[c * 8, r * 8, (c + 1) * 8, (r + 1) * 8] for r in range(8) for c in range(8)], dtype=float)


def ideal_pool() -> ImagePool:
    """Every scene of the world as a pool image, where each feature of CONCEPTS is an ideal feature of
    its concept (it fires on the patches the concept covers)."""
    images, acts_IF = [], np.zeros((N, 8), np.float32)
    for i in range(N):
        acts_PF = np.zeros((64, 8), np.float32)
        for f, c in CONCEPTS.items():
            acts_PF[:, f] = concept_acts(SEED, i, c).ravel()
        patch_N, col_N = np.nonzero(acts_PF)
        images.append(PoolImage(f"world-{SEED}-{i}", (64, 64), GRID_BOXES, patch_N, col_N, acts_PF[patch_N, col_N]))
        acts_IF[i] = acts_PF.max(0)
    return ImagePool([(i, 0) for i in range(N)], list(range(8)), acts_IF, [], images)


def world_scorers(clip_dir) -> Scorers:
    scenes = [World()[i] for i in range(N)]
    return Scorers(source=open_source(f"world:n={N},seed={SEED}"), segmenter=WorldSegmenter(),
                   clip=ClipScorer(clip_dir, device="cpu"), judge=DetectionJudge(OracleWorldJudge(scenes), "detect-zoo-v1"),
                   pool=ideal_pool())


def score_rows(root):
    con = duckdb.connect(str(root / "index.duckdb"), read_only=True)
    rows = con.execute("SELECT feature, metric, value, concept_class, details, model FROM scores "
                       "ORDER BY feature, metric").fetchall()
    con.close()
    return [(f, m, v, c, json.loads(d), model) for f, m, v, c, d, model in rows]


def test_run_score_writes_every_metric_and_a_rerun_adds_nothing(tmp_path, tiny_clip_dir):
    root = make_index(tmp_path)
    cfg = ScoreConfig(index=root, features=[0, 1, 2, 3, 4, 5, 6, 99], detection=True, trials=20, chunk_size=2,
                      progress=False)
    summary = run_score(cfg, world_scorers(tiny_clip_dir))
    rows = score_rows(root)
    by = {(f, m): (v, c, d, model) for f, m, v, c, d, model in rows}
    assert len(rows) == 4 * 7 and {f for f, *_ in rows} == {0, 1, 2, 3}
    assert {f: by[(f, "iou")][1] for f in range(4)} == {0: "colour", 1: "scene", 2: "object", 3: "other"}
    for f in (0, 1, 2):  # ideal features with the true explanation
        # a background covers most of an image, so random regions overlap it a lot too (scene: 0.9 vs 0.86)
        assert by[(f, "iou")][0] > 0.3 and by[(f, "iou")][0] > (1.02 if f == 1 else 3) * by[(f, "iou_random")][0]
        # the paper's baseline: the other features' explanations (other concepts) on the same images
        assert by[(f, "iou")][0] > 2 * by[(f, "iou_random_expl")][0]
        # the paper's code's baseline: the same explanation and feature on random images, where the concept
        # is often absent (IoU 0) and, where present, grounded exactly as on the top images
        assert 0 < by[(f, "iou_random_images")][0] < by[(f, "iou")][0]
        assert by[(f, "iou_random_images")][2]["pool"] == N and by[(f, "iou_random_images")][2]["n_images"] == 3
        assert by[(f, "detection_bacc")][0] == 1.0
        d = by[(f, "detection_bacc")][2]
        assert d["n_pos"] == 3 and d["n_neg"] == 3 and d["template"] == "detect-zoo-v1"
        assert not {tuple(k) for k in d["negatives"]} & {(s, 0) for s, _ in concept_feature(SEED, N, CONCEPTS[f], 3)}
    assert by[(3, "iou")][0] == 0.0 and by[(3, "iou")][2]["empty_segmentations"] == 3  # grounded nothing: counted 0
    assert by[(3, "iou_random_images")][0] == 0.0
    assert by[(3, "detection_bacc")][0] == 0.5 and by[(3, "detection_bacc")][2]["no_concepts"]
    assert by[(0, "iou_random")][2]["trials"] == 20 and by[(0, "iou_random")][2]["se"] > 0
    assert by[(0, "clip_random")][2]["pool"] == 4  # the other features' explanations of the set
    assert by[(0, "iou")][2]["explainer"] == "zoo-explainer" and by[(0, "iou")][3] == "world"
    # the summary: every requested feature accounted for, means per metric and class, ratios
    assert summary["explainer"] == "zoo-explainer" and summary["prompt_version"] == "zoo-v1"
    f = summary["features"]
    assert (f["out_of_range"], f["uninterpretable"], f["no_explanation"], f["no_images"]) == ([99], [4], [5], [6])
    assert sorted(f["scored"]) == [0, 1, 2, 3] and "out of range" in summary["run_errors"][0]["reason"]
    assert summary["run"]["empty_segmentations"] == 3
    ious = [by[(g, "iou")][0] for g in range(4)]
    assert summary["metrics"]["iou"]["mean"] == pytest.approx(np.mean(ious)) and summary["metrics"]["iou"]["n"] == 4
    assert summary["per_class"]["colour"]["iou"]["mean"] == pytest.approx(ious[0])
    assert summary["per_class"]["other"]["iou"]["mean"] == 0.0
    rand = [by[(g, "iou_random")][0] for g in range(4)]
    assert summary["ratios"]["iou/iou_random"] == pytest.approx(np.mean(ious) / np.mean(rand))
    assert summary["ratios"]["iou/iou_random"] > 1.5 and summary["trials"]["iou_random"] == [20]
    assert summary["metrics"]["detection_bacc"]["mean"] == pytest.approx((3 * 1.0 + 0.5) / 4)
    assert json.loads((root / "score-summary.json").read_text())["metrics"] == summary["metrics"]

    again = run_score(cfg, world_scorers(tiny_clip_dir))
    assert score_rows(root) == rows  # nothing duplicated, nothing changed
    assert sorted(again["features"]["already_scored"]) == [0, 1, 2, 3] and again["features"]["scored"] == []
    assert again["metrics"] == summary["metrics"]

    # a run killed before feature 2's clip rows were stored resumes to the same values
    con = duckdb.connect(str(root / "index.duckdb"))
    con.execute("DELETE FROM scores WHERE feature = 2 AND metric LIKE 'clip%'")
    con.close()
    resumed = run_score(cfg, world_scorers(tiny_clip_dir))
    assert resumed["features"]["scored"] == [2]
    assert [r[:4] for r in score_rows(root)] == [r[:4] for r in rows]


def test_run_score_builds_default_scorers_and_records_what_it_cannot_do(tmp_path, tiny_clip_dir):
    root = make_index(tmp_path)
    summary = run_score(ScoreConfig(index=root, detection=True, clip_model=tiny_clip_dir, trials=5, progress=False))
    rows = score_rows(root)
    assert {m for _, m, *_ in rows} == {"iou", "iou_random", "iou_random_expl", "clip", "clip_random"}
    assert {f for f, *_ in rows} == {0, 1, 2, 3}
    # the fixture's meta names no real model or SAE: no random images (detection negatives, iou_random_images)
    for metric in ("detection_bacc", "iou_random_images"):
        errs = [e for e in summary["run_errors"] if e["metric"] == metric]
        assert {e["feature"] for e in errs} == {0, 1, 2, 3} and "does not exist" in errs[0]["reason"]
    # the other explanation set is scored on request, separately
    other = run_score(ScoreConfig(index=root, explainer="other-explainer", clip_model=tiny_clip_dir, trials=5,
                                  progress=False))
    assert other["features"]["scored"] == [0] and other["metrics"]["iou"]["n"] == 1
    assert "clip_random" not in other["metrics"]  # no other explanation in that set to draw from
    assert any("no other explanation" in e["reason"] for e in other["run_errors"])
    with pytest.raises(ValueError, match="zoo-explainer/zoo-v1"):
        run_score(ScoreConfig(index=root, explainer="nobody", progress=False))


def test_score_cli_prints_a_table_and_names_bad_input(tmp_path, tiny_clip_dir):
    from click.testing import CliRunner

    from mmsae.cli import command

    app = command()
    root = make_index(tmp_path)
    res = CliRunner().invoke(app, ["score", "--index", str(root), "--clip-model", str(tiny_clip_dir), "--trials", "5",
                                   "--features", "0,1,99"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "total" in res.output and "colour" in res.output and "1 out of range" in res.output
    cfg = json.loads((root / "score-config.json").read_text())  # beside score-summary.json
    assert cfg["config"] == "ScoreConfig" and cfg["features"] == [0, 1, 99] and cfg["trials"] == 5
    # the config's own field names are the flags: --n-negatives, --judge-model (was --negatives, --explainer-model)
    res = CliRunner().invoke(app, ["score", "--index", str(root), "--clip-model", str(tiny_clip_dir), "--trials", "5",
                                   "--features", "0", "--n-negatives", "2", "--no-iou", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["config"]["n_negatives"] == 2
    res = CliRunner().invoke(app, ["score", "--index", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "no feature index" in res.output


def test_run_score_with_grounded_sam_end_to_end(tmp_path, tiny_grounded_sam):
    gd, sam = tiny_grounded_sam
    root = make_index(tmp_path)
    summary = run_score(ScoreConfig(index=root, features=[0, 1], segmenter="grounded-sam", grounding_model=gd,
                                    sam_model=sam, box_threshold=0.0, text_threshold=0.0, clip=False, trials=3,
                                    random_images=False, device="cpu", progress=False))
    rows = score_rows(root)
    assert {(f, m) for f, m, *_ in rows} == {(f, m) for f in (0, 1) for m in ("iou", "iou_random", "iou_random_expl")}
    assert all(model == "grounded-sam:grounding-dino+sam" and 0.0 <= v <= 1.0 for _, _, v, _, _, model in rows)
    assert summary["run_errors"] == [] and summary["metrics"]["iou"]["n"] == 2
    with pytest.raises(ValueError, match="--grounding-model"):
        run_score(ScoreConfig(index=root, segmenter="grounded-sam", clip=False, progress=False))
