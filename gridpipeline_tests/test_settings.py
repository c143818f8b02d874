"""A missing or misconfigured path or setting gives one clear error that names the setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gridpipeline.settings import ConfigurationError, get_settings, reset_settings


def test_defaults_live_under_home(gp_home):
    s = get_settings()
    assert s.landing == gp_home / "landing" and s.rejected == gp_home / "rejected"
    assert s.db_path == gp_home / "store.duckdb"


def test_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_COVERAGE_WARN", "lots")
    reset_settings()
    with pytest.raises(ConfigurationError, match="GRIDPIPELINE_COVERAGE_WARN"):
        get_settings()
    reset_settings()


def test_missing_data_dir_names_the_variable(gp_home, monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_DATA_DIR", str(gp_home / "nowhere"))
    reset_settings()
    with pytest.raises(ConfigurationError, match="GRIDPIPELINE_DATA_DIR"):
        get_settings().ensure_dirs()


def test_unusable_landing_dir_names_the_variable(gp_home, monkeypatch):
    blocker = gp_home / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GRIDPIPELINE_LANDING_DIR", str(blocker / "landing"))
    reset_settings()
    with pytest.raises(ConfigurationError, match="GRIDPIPELINE_LANDING_DIR"):
        get_settings().ensure_dirs()


def test_cli_reports_the_setting_without_a_traceback(gp_home, monkeypatch):
    exe = Path(sys.executable).parent / "gridpipeline"
    env = {"PATH": "/usr/bin:/bin", "GRIDPIPELINE_HOME": str(gp_home), "GRIDPIPELINE_STUCK_SAMPLES": "1"}
    out = subprocess.run([str(exe), "simulate", "--start", "now-5m"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert "GRIDPIPELINE_STUCK_SAMPLES" in out.stderr and "Traceback" not in out.stderr


def test_n2_cases_parse_and_malformed_ones_name_the_variable(gp_home, monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_N2_CONTINGENCIES", "line:3+line:7; trafo:0+line:12")
    reset_settings()
    assert get_settings().n2_list() == [(("line", 3), ("line", 7)), (("trafo", 0), ("line", 12))]
    monkeypatch.setenv("GRIDPIPELINE_N2_CONTINGENCIES", "line3+line:7")
    reset_settings()
    with pytest.raises(ConfigurationError, match="GRIDPIPELINE_N2_CONTINGENCIES"):
        get_settings().n2_list()
    reset_settings()
