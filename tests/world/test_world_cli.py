import json

import numpy as np
from PIL import Image
from click.testing import CliRunner

from mmsae.cli import command
from mmsae.world import World

runner = CliRunner()


def test_sample_writes_sheet_and_specs(tmp_path):
    out = tmp_path / "s"
    res = runner.invoke(command(), ["world", "sample", "--n", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    sheet = Image.open(out / "sheet.png")
    assert sheet.width > 7 * 64 and sheet.height > 4 * 64
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert rows[2]["caption"].endswith(f"on {World()[2].background} .")
    assert np.array_equal(np.array(Image.open(out / rows[1]["image"])), World()[1].image)
    assert json.loads((out / "config.json").read_text())["n"] == 4


def test_sample_bad_count_names_the_field(tmp_path):
    res = runner.invoke(command(), ["world", "sample", "--n", "0", "--out", str(tmp_path / "s")])
    assert res.exit_code == 2 and "n must be >= 1, got 0" in res.output


def test_impossible_world_is_an_error_and_writes_nothing(tmp_path):
    out = tmp_path / "s"
    res = runner.invoke(command(), ["world", "sample", "--n", "2", "--out", str(out), "--image-size", "16"])
    assert res.exit_code != 0
    assert "below the minimum" in res.output
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_mask_by_concept_name(tmp_path):
    scene = World()[3]
    name = scene.objects[0].kind
    res = runner.invoke(command(), ["world", "mask", "--index", "3", "--concept", name, "--out", str(tmp_path / "m.png")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.array(Image.open(tmp_path / "m.png")) > 0, scene.concept_mask(name))
    assert json.loads((tmp_path / "m.config.json").read_text())["concept"] == name
    bad = runner.invoke(command(), ["world", "mask", "--index", "3", "--concept", "zebra", "--out", str(tmp_path / "z.png")])
    assert bad.exit_code != 0 and "unknown concept 'zebra'" in bad.output
    assert not (tmp_path / "z.png").exists()
