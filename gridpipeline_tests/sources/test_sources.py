"""The pipeline's interfaces: the network export, and the weather source's degraded modes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gridpipeline.settings import PROJECT_ROOT
from gridpipeline.sources.network import NetworkModelMissing, load_network_model
from gridpipeline.sources.resources import SettingsResource, WeatherSource

ISSUE = pd.Timestamp("2026-11-20 09:00", tz="UTC")


def test_network_model_is_the_published_export_with_zones():
    model = load_network_model(PROJECT_ROOT / "data" / "sample_grid" / "network.json")
    assert len(model.net.bus) == 227 and len(model.net.load) == 218
    assert model is load_network_model(model.path)  # cached while the file is unchanged
    nominal = model.nominal_zone_demand()
    assert nominal["system"] == pytest.approx(nominal.drop("system").sum())
    assert nominal["system"] == pytest.approx(float((model.net.load.p_mw * model.net.load.scaling).sum()))
    assert model.capacity_mw(("PV", "lv_RES")) > 0


def test_missing_network_says_what_to_do(tmp_path):
    with pytest.raises(NetworkModelMissing, match="GRIDPIPELINE_NETWORK_PATH"):
        load_network_model(tmp_path / "nope.json")


def test_settings_resource_is_what_the_location_was_built_with(monkeypatch):
    from gridpipeline.settings import Settings

    res = SettingsResource.from_settings(Settings(v_min_pu=0.93))
    monkeypatch.setenv("GRIDPIPELINE_V_MIN_PU", "0.9")
    assert res.get().v_min_pu == 0.93


def _source(tmp_path, **kw) -> WeatherSource:
    return WeatherSource(weather_dir=str(tmp_path / "weather"), latitude=36.1, longitude=-79.95, **kw)


def test_no_forecast_at_all_is_an_empty_stale_forecast(tmp_path):
    frame, source, stale, message = _source(tmp_path).forecast(ISSUE, pd.Timedelta(hours=24))
    assert stale and "unavailable" in source and message
    assert len(frame) == 288 and frame.isna().all().all()


def test_last_stored_forecast_serves_when_the_feed_is_down(tmp_path):
    prev = pd.DataFrame({"temperature": np.arange(288.0)},
                        index=pd.date_range(ISSUE, periods=288, freq="5min"))
    frame, source, stale, _ = _source(tmp_path, mode="open_meteo", base_url="http://127.0.0.1:9", retries=0,
                                      timeout_s=0.5).forecast(ISSUE, pd.Timedelta(hours=24), lambda at: prev)
    assert stale and source == "open_meteo (last forecast)" and frame.temperature.iloc[5] == 5.0
