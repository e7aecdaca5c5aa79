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
