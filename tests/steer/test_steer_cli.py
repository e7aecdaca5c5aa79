"""`mmsae steer` end to end on a tiny model and a saved SAE: the JSON result, the table, the errors."""

import json

import pytest
from click.testing import CliRunner
from PIL import Image
from steer_helpers import random_sae

from mmsae.cli import command


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from mmsae.models import load_adapter, tiny

    root = tmp_path_factory.mktemp("steer_cli")
    model = tiny.build_llava(root / "model")
    adapter = load_adapter(model)
    sae = random_sae(adapter.d_model, n_latents=64, k=4)
    sae.cfg.hook_layer = 1
    sae.save_pretrained(root / "sae")
    Image.new("RGB", (40, 30), "red").save(root / "red.png")
    return root, model


def _steer(root, model, *extra):
    args = ["steer", "--model", str(model), "--sae", str(root / "sae"), "--prompt", "what colour is the star",
            "--image", str(root / "red.png"), "--max-new-tokens", "6", *extra]
    return CliRunner().invoke(command(), args)


def test_json_gives_both_answers_and_the_interventions(parts):
    root, model = parts
    res = _steer(root, model, "--feature", "3,5-6", "--value", "40", "--mode", "add", "--tokens", "image", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) >= {"unsteered", "steered", "interventions"}
    assert isinstance(out["unsteered"], str) and isinstance(out["steered"], str)
    assert [i["feature"] for i in out["interventions"]] == [3, 5, 6]
    assert all(i["op"] == "add" and i["tokens"] == "image" for i in out["interventions"])
    assert out["layer"] == 1  # the SAE's recorded hook layer


def test_a_noop_steer_answers_as_unsteered_and_a_strong_one_changes_the_answer(parts):
    root, model = parts
    noop = json.loads(_steer(root, model, "--feature", "3", "--value", "0", "--mode", "add", "--json").stdout)
    assert noop["steered"] == noop["unsteered"]
    strong = _steer(root, model, "--feature", "3", "--value", "500", "--mode", "add", "--tokens", "all", "--json")
    out = json.loads(strong.stdout)
    assert out["steered"] != out["unsteered"]


def test_table_output_names_both_columns(parts):
    root, model = parts
    res = _steer(root, model, "--feature", "3", "--value", "2", "--mode", "scale")
    assert res.exit_code == 0, res.output
    assert "unsteered" in res.output and "steered" in res.output and "scale 3" in res.output


@pytest.mark.parametrize("extra, needle", [
    (["--feature", "64", "--value", "1"], "feature 64 is out of range"),
    (["--feature", "3", "--value", "1", "--mode", "boost"], "boost"),
    (["--feature", "3", "--value", "1", "--layer", "9"], "layer 9 is out of range"),
])
def test_bad_input_is_a_clear_error(parts, extra, needle):
    root, model = parts
    res = _steer(root, model, *extra)
    assert res.exit_code != 0
    assert needle in res.output + str(res.exception)


def test_missing_files_are_named(parts, tmp_path):
    root, model = parts
    res = CliRunner().invoke(command(), ["steer", "--model", str(model), "--sae", str(tmp_path / "nope"), "--prompt", "x",
                                         "--feature", "1", "--value", "1"])
    assert res.exit_code != 0 and "nope" in res.output + str(res.exception)
