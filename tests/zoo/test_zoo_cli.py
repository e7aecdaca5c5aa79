import json

from click.testing import CliRunner

from mmsae.cli import command
from mmsae.zoo import MODELS, model_dir

runner = CliRunner()


def test_list_json_names_every_model():
    res = runner.invoke(command(), ["zoo", "list", "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert [r["name"] for r in rows] == list(MODELS)
    assert all(r["present"] for r in rows), "the zoo's weights must ship with the package"
    text = runner.invoke(command(), ["zoo", "list"])
    assert text.exit_code == 0 and all(name in text.output for name in MODELS)


def test_list_marks_missing_models(tmp_path):
    res = runner.invoke(command(), ["zoo", "list", "--root", str(tmp_path)])
    assert res.exit_code == 0 and res.output.count("(missing)") == len(MODELS)


def test_missing_model_directory_is_a_clear_error(tmp_path):
    res = runner.invoke(command(), ["zoo", "eval", "--json", "--root", str(tmp_path / "nowhere")])
    assert res.exit_code == 2
    assert "zoo model 'subject' not found" in res.output


def test_unknown_model_name():
    import pytest

    with pytest.raises(ValueError, match="unknown zoo model 'giant'"):
        model_dir("giant")
