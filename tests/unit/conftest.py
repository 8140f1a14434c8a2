"""Fixtures for the unit tests (no real engine): the fake `podman` on PATH."""

import os

import pytest

from tests.conftest import BIN
from tests.unit.fake_engine import install_podman_script


@pytest.fixture
def fake_podman(tmp_path, monkeypatch):
    """A recording `podman` first on PATH (tests/unit/fake_engine.py); returns its ScriptLog.

    It watches GRANTED, the variable the credential tests grant, to show it never
    reaches the engine's environment.
    """
    bindir = tmp_path / "fakebin"
    log = install_podman_script(bindir, tmp_path / "fake-podman", watch=("GRANTED",))
    monkeypatch.setenv("PATH", f"{bindir}:{BIN}:{os.environ['PATH']}")
    return log
