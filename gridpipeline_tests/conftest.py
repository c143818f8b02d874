"""Shared fixtures: every test gets its own GRIDPIPELINE_HOME (DuckDB file, landing zone) in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridpipeline.settings import get_settings, reset_settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def gp_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "gp"
    monkeypatch.setenv("GRIDPIPELINE_HOME", str(home))
    monkeypatch.setenv("GRIDPIPELINE_DUCKDB_PATH", str(home / "store.duckdb"))
    monkeypatch.delenv("GRIDPIPELINE_LANDING_DIR", raising=False)
    monkeypatch.delenv("GRIDPIPELINE_REJECTED_DIR", raising=False)
    reset_settings()
    s = get_settings()
    s.ensure_dirs()
    yield home
    reset_settings()
