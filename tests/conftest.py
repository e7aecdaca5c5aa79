"""Fixtures shared by the test packages (each package's own conftest sets its thread and offline defaults)."""

import os

import pytest

# Read before any package's conftest sets OMP_NUM_THREADS=1 for its small tests (this file loads first):
# a subprocess that stands for a user's run gets the environment the suite was started with.
USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")


@pytest.fixture(scope="session")
def user_env():
    """env(**extra): os.environ as the suite found it (OMP_NUM_THREADS the caller's, not a conftest's), plus extra."""

    def env(**extra: str) -> dict:
        out = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if USER_OMP_NUM_THREADS is not None:
            out["OMP_NUM_THREADS"] = USER_OMP_NUM_THREADS
        return {**out, **extra}

    return env


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
