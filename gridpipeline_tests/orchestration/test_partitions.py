"""The partitions start on the store's epoch: the env setting, else the recorded first day, else the default."""

from __future__ import annotations

from datetime import date

import pytest

from gridpipeline.base import partitions as P


def test_epoch_resolution_order_and_write_once(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.delenv("GRIDPIPELINE_PARTITIONS_START", raising=False)
    assert P.resolve_start() == P.DEFAULT_START
    assert P.write_epoch(date(2025, 11, 26)) is True
    assert P.resolve_start() == "2025-11-26"
    # once set, never moved: moving it would re-key every partition the instance knows
    assert P.write_epoch(date(2026, 1, 1)) is False
    assert P.resolve_start() == "2025-11-26"
    monkeypatch.setenv("GRIDPIPELINE_PARTITIONS_START", "2026-02-01")
    assert P.resolve_start() == "2026-02-01"


def test_a_garbled_epoch_file_is_named_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_HOME", str(tmp_path))
    monkeypatch.delenv("GRIDPIPELINE_PARTITIONS_START", raising=False)
    (tmp_path / "partitions_start").write_text("last tuesday\n")
    with pytest.raises(RuntimeError, match="partitions_start: expected a date"):
        P.resolve_start()
