"""The Neuronpedia export: the batch layout, features / activations / explanations from the index's text
side, stable content-derived output, and clear config errors."""

import gzip
import json

import pytest

from mmsae.view.neuronpedia import ExportConfig, context_tokens, run_export


def read_gz(path):
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


def test_export_writes_the_batch_layout(index_dir, tmp_path):
    out = tmp_path / "np"
    result = run_export(ExportConfig(index=str(index_dir), out=str(out), model_id="zoo-subject", batch_size=2))
    root = out / "zoo-subject" / "3-mmsae-res"
    assert result["out"] == str(root) and result["batches"] == 3 and result["features"] == 5
    for name in ("release", "model", "sourceset", "source"):
        assert len((root / f"{name}.jsonl").read_text().splitlines()) == 1
    assert json.loads((root / "source.jsonl").read_text())["id"] == "3-mmsae-res"
    feats = [r for n in range(3) for r in read_gz(root / "features" / f"batch-{n}.jsonl.gz")]
    assert [f["index"] for f in feats] == ["3", "5", "6", "7", "9"] and all(f["layer"] == "3-mmsae-res" for f in feats)
    acts = read_gz(root / "activations" / "batch-0.jsonl.gz")
    assert [(a["index"], a["tokens"], a["values"], a["maxValueTokenIndex"]) for a in acts][0] == \
        ("3", ["a", "red", "circle"], [0.0, 2.5, 0.0], 1)
    assert len(acts) == 2 and len(set(a["id"] for a in acts)) == 2 and len(acts[0]["id"]) == 25
    expl = [e for n in range(3) for e in read_gz(root / "explanations" / f"batch-{n}.jsonl.gz")]
    assert {e["index"]: e["description"] for e in expl} == {"3": "red objects", "5": "a diagonal line",
                                                             "7": '<script>window.pwned = 1</script>a red "thing" & co'}
    assert expl[0]["explanationModelName"] == "zoo-explainer"  # 6 is 'unable to interpret': not exported
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.gz")}
    run_export(ExportConfig(index=str(index_dir), out=str(out), model_id="zoo-subject", batch_size=2))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*.gz")} == first  # the same files again


def test_context_tokens():
    assert context_tokens("x <<y>> z w", 2.0) == (["x", "y", "z", "w"], [0.0, 2.0, 0.0, 0.0], 1)
    assert context_tokens("no mark", 1.0) == (["no", "mark"], [0.0, 0.0], 0)


def test_export_config_errors(index_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="index"):
        ExportConfig(index=str(tmp_path / "none"), out=str(tmp_path))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ExportConfig(index=str(index_dir), out=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="source_set"):
        ExportConfig(index=str(index_dir), out=str(tmp_path), source_set="../x")
