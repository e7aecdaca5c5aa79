"""The demo's configuration: stages by name, in the demo's order, with what each needs."""

import subprocess
import sys

import pytest

from mmsae.pipeline.demo import DEFAULT_STAGES, STAGES, DemoConfig


def test_stages_are_put_in_the_demo_order():
    assert DemoConfig(stages="sae, harvest ,world").stage_list == ("world", "harvest", "sae")
    assert DemoConfig().stage_list == DEFAULT_STAGES
    assert DEFAULT_STAGES == tuple(STAGES)  # every stage fits the 10-minute budget


@pytest.mark.parametrize("stages, message", [
    ("world,nope", "unknown stage 'nope'"),
    (" , ", "at least one"),
    ("world,interp", "'interp' needs 'harvest', 'sae'"),
    ("harvest,finetune", "'finetune' needs 'sae'"),
])
def test_bad_stages_name_the_problem(stages, message):
    with pytest.raises(ValueError, match=message):
        DemoConfig(stages=stages)


def test_cli_rejects_a_bad_stage_with_exit_2(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mmsae", "demo", "--out", str(tmp_path / "o"), "--stages", "zo"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown stage 'zo'" in res.stderr
    assert not (tmp_path / "o").exists()


def test_cli_world_stage_writes_report_and_config(tmp_path):
    out = tmp_path / "o"
    res = subprocess.run([sys.executable, "-m", "mmsae", "demo", "--out", str(out), "--stages", "world"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "## The embedded world" in (out / "report.md").read_text()
    assert (out / "world" / "sheet.png").stat().st_size > 1000
    assert '"stages": "world"' in (out / "config.json").read_text()
