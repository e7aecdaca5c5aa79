"""The commands generated from config dataclasses (mmsae.cli.CONFIG_COMMANDS), run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from mmsae.cli import CONFIG_COMMANDS, command


def test_every_config_command_has_help_from_its_fields():
    runner = CliRunner()
    for name in CONFIG_COMMANDS:
        result = runner.invoke(command(), [*name.split(" "), "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "--config" in result.output, name


def test_bad_value_is_an_error_naming_the_field(tmp_path):
    result = CliRunner().invoke(command(), ["filter", "select", "--scores", str(tmp_path), "--keep", "2",
                                            "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "keep" in result.output and "(0, 1]" in result.output


def test_config_file_with_flag_override(tmp_path):
    cfg = tmp_path / "select.json"
    cfg.write_text(json.dumps({"scores": str(tmp_path), "keep": 0.5, "out": str(tmp_path / "out")}))
    result = CliRunner().invoke(command(), ["filter", "select", "--config", str(cfg), "--keep", "3"])
    assert result.exit_code == 2 and "got 3" in result.output  # the flag beat the file's 0.5
    cfg.write_text(json.dumps({"scores": str(tmp_path), "kep": 0.5}))
    result = CliRunner().invoke(command(), ["filter", "select", "--config", str(cfg)])
    assert result.exit_code != 0 and "kep" in result.output


def test_the_console_entry_lists_old_and_new_commands():
    out = subprocess.run([sys.executable, "-m", "mmsae", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("harvest", "train", "index", "score", "demo", "view", "filter", "crossmodal", "finetune", "export"):
        assert name in out.stdout


def test_every_field_of_every_command_has_its_help():
    import importlib

    from mmsae.cli.configs import field_docs, field_specs

    for name, spec in CONFIG_COMMANDS.items():
        module, cls_name, func, *fmt = spec.split(":")
        mod = importlib.import_module(module)
        cls = getattr(mod, cls_name)
        assert callable(getattr(mod, func)) and all(callable(getattr(mod, f)) for f in fmt), name
        docs = field_docs(cls)
        undocumented = [s.name for s in field_specs(cls) if not docs.get(s.name)]
        assert not undocumented, (name, undocumented)


def test_no_package_keeps_a_hand_written_cli_module():
    from pathlib import Path

    import mmsae

    root = Path(mmsae.__file__).parent
    assert sorted(p.relative_to(root).as_posix() for p in root.glob("*/cli.py")) == []
    assert not any("typer" in p.read_text() for p in root.rglob("*.py"))


def test_importing_the_cli_leaves_the_environment_alone():
    code = ("import os; os.environ.pop('HF_HUB_OFFLINE', None); import mmsae.cli; "
            "print(os.environ.get('HF_HUB_OFFLINE'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr


def test_a_formatter_command_prints_text_or_json(tmp_path):
    out = tmp_path / "m.png"
    text = CliRunner().invoke(command(), ["world", "mask", "--index", "0", "--concept", "sky", "--out", str(out)])
    assert text.exit_code == 0 and text.output.startswith("sky: ")
    as_json = CliRunner().invoke(command(), ["world", "mask", "--index", "0", "--concept", "sky", "--out", str(out),
                                             "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["concept"] == "sky"
    bad = CliRunner().invoke(command(), ["world", "mask", "--index", "-1", "--concept", "sky", "--out", str(out)])
    assert bad.exit_code == 2 and "index must be >= 0, got -1" in bad.output
