"""The import rules of CONVENTIONS.md, checked by import-linter against pyproject's layers contract.

The second test proves the check can fail: it copies the package, adds one back-edge (a low layer importing
the CLI) and expects lint-imports to reject it, naming the offending import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason=f"import-linter not installed next to {sys.executable}")


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run([str(LINT), "--no-cache", str(cwd / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_package_keeps_its_layers():
    result = _lint(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_back_edge_is_rejected(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mmsae", src / "mmsae", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    io_py = src / "mmsae" / "io.py"
    io_py.write_text(io_py.read_text() + "\n\ndef _back_edge():\n    import mmsae.index  # noqa: F401\n")
    result = _lint(src, tmp_path)
    assert result.returncode != 0
    assert "mmsae.io -> mmsae.index" in result.stdout, result.stdout


def test_every_package_says_its_job_and_what_it_may_import():
    import ast
    from pathlib import Path

    import mmsae

    root = Path(mmsae.__file__).parent
    for init in sorted(root.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert doc.split("\n")[0].strip(), f"{init.parent.name}: no docstring saying its job"
        assert "May import" in doc, f"{init.parent.name}: its docstring does not say what it may import"
