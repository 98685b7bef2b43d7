"""Fixtures of the TUI tests; the helpers they share are in ``tui_pilot.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tui_pilot import FakeRuns


@pytest.fixture(autouse=True)
def _isolated(work: Path) -> Path:
    """Every wizard here runs in a scratch working directory that sees only the built-in
    presets (``work``, tests/conftest.py), so nothing reads or writes the user's files."""
    return work


@pytest.fixture
def fake_runs(work: Path) -> FakeRuns:
    """Three runs under ``work/runs``, served by a recording fake runs door."""
    return FakeRuns(work / "runs")
