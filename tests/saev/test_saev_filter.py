import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsae.data import open_source
from mmsae.data.write import read_column
from mmsae.saev.filter import (FilterScoreConfig, FilterSelectConfig, run_filter_score, run_filter_select,
                               select_rows)
from mmsae.saev.scoring import score_records

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_helper import sigkill_once  # noqa: E402

PROMPT = "<s> user : <image> {caption}"


def jsonl_data(root: Path, n=6):
    from mmsae.world import World, WorldConfig
    from mmsae.world.text import caption

    root.mkdir(parents=True, exist_ok=True)
    world = World(WorldConfig(seed=4))
    rows = []
    for i in range(n):
        world[i].pil.save(root / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"{i}.png", "source": "w",
                     "conversations": [{"from": "human", "value": f"<image> {caption(world[i])}"}]})
    (root / "broken.png").write_bytes(b"not a png")
    rows.append({"id": "broken", "image": "broken.png", "conversations": [{"from": "human", "value": "<image> a"}]})
    rows.append({"id": "notext", "image": "0.png", "conversations": [{"from": "human", "value": "<image>"}]})
    rows.append({"id": "r0-again", "image": "1.png", "conversations": rows[0]["conversations"]})  # same text, other image
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "d.jsonl", rows


def test_score_writes_data_back_with_scores_and_rejects(tmp_path, sae_dir, subject, sae):
    path, rows = jsonl_data(tmp_path / "d")
    res = run_filter_score(FilterScoreConfig(sae=str(sae_dir), data=str(path), out=str(tmp_path / "o"),
                                             method="cooccur", threshold=0.2, device="cpu", progress=False))
    out = [json.loads(x) for x in Path(res["spec"].split(":", 1)[1].split("?")[0]).read_text().splitlines()]
    assert [{k: v for k, v in o.items() if k != "saev_cooccur"} for o in out] == rows  # every field kept
    reasons = {json.loads(x)["id"]: json.loads(x)["reason"] for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()}
    assert set(reasons) == {"broken", "notext"} and "text is empty" in reasons["notext"]
    assert out[6]["saev_cooccur"] is None and out[7]["saev_cooccur"] is None
    src = open_source(str(path))
    direct = score_records(subject, sae, [src.record(i) for i in (0, 1, 8)], "cooccur", threshold=0.2)
    assert [out[i]["saev_cooccur"] for i in (0, 1, 8)] == pytest.approx([direct[k] for k in ("r0", "r1", "r0-again")])
    info = json.loads((tmp_path / "o" / "saev.json").read_text())
    assert "special tokens" in info["tokens"] and info["n_rejects"] == 2 and info["n_scored"] == 7

    sel = run_filter_select(FilterSelectConfig(scores=str(tmp_path / "o"), keep=0.5, out=str(tmp_path / "s")))
    kept = [json.loads(x) for x in Path(sel["spec"].split(":", 1)[1].split("?")[0]).read_text().splitlines()]
    assert len(kept) == sel["n_kept"] == 4
    assert min(k["saev_cooccur"] for k in kept) >= max(o["saev_cooccur"] for o in out
                                                        if o["saev_cooccur"] is not None and o not in kept)


def test_select_ties_keep_and_bottom():
    assert select_rows([1, 3, 3, None, 2, 3], 0.4) == [1, 2]  # three tied at 3: the earlier two
    assert select_rows([1, 3, 3, None, 2, 3], 0.4, bottom=True) == [0, 4]
    assert select_rows([5.0], 0.01) == [0]
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
            FilterSelectConfig(scores="x", out="y", keep=bad)


def test_clear_errors(tmp_path, sae_dir):
    with pytest.raises(ValueError, match="mmsae crossmodal"):
        FilterScoreConfig(sae=str(sae_dir), data="world:n=2", out="x", method="cosine")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "text": ["red"]}), tmp_path / "t.parquet")
    with pytest.raises(ValueError, match="no image column"):
        run_filter_score(FilterScoreConfig(sae=str(sae_dir), data=str(tmp_path / "t.parquet"), out=str(tmp_path / "o"),
                                           method="cooccur", device="cpu", progress=False))


def test_sigkill_then_rerun_has_no_duplicate_or_lost_record(tmp_path, relu_sae_dir):
    kw = dict(sae=str(relu_sae_dir), data="world:n=10,seed=2", prompt=PROMPT, method="l0", chunk_records=2,
              batch_size=1, device="cpu", progress=False)
    a = run_filter_score(FilterScoreConfig(out=str(tmp_path / "a"), **kw))
    b_out = tmp_path / "b"
    code = ("import torch; torch.set_num_threads(1); from mmsae.saev.filter import FilterScoreConfig, run_filter_score; "
            f"run_filter_score(FilterScoreConfig(out={str(b_out)!r}, **{kw!r}))")
    sigkill_once(["-c", code], lambda: (b_out / "filter-state.json").exists())
    b = run_filter_score(FilterScoreConfig(out=str(b_out), **kw))
    lines = (b_out / "scores.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == list(range(10))
    va, vb = read_column(open_source(a["spec"]), "saev_l0"), read_column(open_source(b["spec"]), "saev_l0")
    assert np.allclose(va, vb) and len(va) == 10
