"""Fixtures shared by the test packages (each package's own conftest sets its thread and offline defaults)."""

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Builds (once per session) a tiny random model of a family (mmsae.models.tiny); returns its directory."""
    from mmsae.models import tiny

    made = {}

    def get(family: str):
        if family not in made:
            made[family] = getattr(tiny, f"build_{family}")(tmp_path_factory.mktemp(family))
        return made[family]

    return get
