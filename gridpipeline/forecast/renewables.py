"""PV and wind generation forecasts: physics first, then a learnt correction, plus intermittency.

* Physics (:mod:`gridpipeline.common.renewables`, shared with the simulated world): PV by pvlib
  (:func:`pv_physics`), wind by a turbine power curve at hub height (:func:`wind_physics`).
* :class:`Correction`: LightGBM quantile models (P10/P50/P90) of the measured output, as a
  fraction of the rating, from the physics output and a few context features (time of day, sun
  elevation or wind direction). Fit on measured PV (pvanalytics' SERF East data) and on the
  GEFCom2012 wind farms; :func:`wind_backtest` and :func:`pv_backtest` score them.
* Intermittency: ramp events (changes beyond a share of the rating within a window) and the
  variability index of Stein et al. (2012), on measured or forecast series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gridpipeline.common.renewables import pv_physics, wind_physics

QUANTILES = (0.1, 0.5, 0.9)


@dataclass
class Correction:
    """Quantile models of measured output / rating from the physics fraction and context features."""

    features: list[str]
    models: list[Any] = field(default_factory=list)
    rounds: int = 150
    max_rows: int = 30_000
    #: LightGBM's threads, in training and (kept in the model) in prediction: one, as the demand model's
    #: (forecast.deployed): under ``dev`` they share two cores with the 30-second loop
    threads: int = 1

    def fit(self, X: pd.DataFrame, y_frac: np.ndarray, seed: int = 0) -> "Correction":
        import lightgbm as lgb

        ok = np.isfinite(y_frac)
        if ok.sum() > self.max_rows:
            keep = np.random.default_rng(seed).choice(np.flatnonzero(ok), self.max_rows, replace=False)
            ok = np.zeros(len(ok), bool)
            ok[keep] = True
        self.models = []
        for q in QUANTILES:
            params = {"objective": "quantile", "alpha": q, "learning_rate": 0.08, "num_leaves": 31,
                      "min_data_in_leaf": 40, "verbose": -1, "seed": seed, "num_threads": self.threads}
            self.models.append(lgb.train(params, lgb.Dataset(X.loc[ok, self.features], y_frac[ok]),
                                         num_boost_round=self.rounds))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """(n, 3) P10/P50/P90 as fractions of the rating, ordered and clipped to [0, 1]."""
        pred = np.column_stack([m.predict(X[self.features]) for m in self.models])
        return np.clip(np.sort(pred, axis=1), 0.0, 1.0)


def pv_features(weather: pd.DataFrame, latitude: float, longitude: float, physics_frac: np.ndarray) -> pd.DataFrame:
    import pvlib

    sp = pvlib.solarposition.get_solarposition(weather.index, latitude, longitude)
    # local mean solar time, not the index's clock: a model learnt at one site (UTC-7) must see the
    # same hour at another longitude's noon (the UTC hour put a site at -80 degrees two hours off)
    utc = weather.index.tz_convert("UTC") if weather.index.tz is not None else weather.index
    hour = (utc.hour + utc.minute / 60 + longitude / 15.0) % 24.0
    return pd.DataFrame({
        "physics": physics_frac, "elevation": sp["apparent_elevation"].to_numpy(),
        "csi": weather["clear_sky_index"].to_numpy() if "clear_sky_index" in weather else np.nan,
        "temperature": weather["temperature"].to_numpy(),
        "hour_sin": np.sin(2 * np.pi * hour / 24), "hour_cos": np.cos(2 * np.pi * hour / 24),
    }, index=weather.index)


def wind_features(hub_speed: np.ndarray, direction_deg: np.ndarray | None, index: pd.DatetimeIndex,
                  physics_frac: np.ndarray) -> pd.DataFrame:
    d = np.radians(np.asarray(direction_deg, dtype=float)) if direction_deg is not None else np.full(len(index), np.nan)
    hour = index.hour
    return pd.DataFrame({
        "physics": physics_frac, "ws": np.asarray(hub_speed, dtype=float), "ws3": np.asarray(hub_speed, float) ** 3,
        "dir_sin": np.sin(d), "dir_cos": np.cos(d),
        "hour_sin": np.sin(2 * np.pi * hour / 24), "hour_cos": np.cos(2 * np.pi * hour / 24),
    }, index=index)


# ----------------------------------------------------------------------------- intermittency
def ramp_events(series: pd.Series, capacity: float, threshold: float = 0.1, window: int = 3) -> pd.DataFrame:
    """Changes of more than ``threshold`` x ``capacity`` within ``window`` steps, merged into events:
    start, end, direction (up/down), magnitude (same units as the series)."""
    s = series.astype(float)
    delta = s.shift(-window) - s
    flag = delta.abs() > threshold * capacity
    events = []
    run_start = None
    idx = s.index
    for k, (f, d) in enumerate(zip(flag.to_numpy(), delta.to_numpy())):
        if f and run_start is None:
            run_start, sign = k, np.sign(d)
        elif run_start is not None and (not f or np.sign(d) != sign):
            end = min(k - 1 + window, len(s) - 1)
            events.append({"start": idx[run_start], "end": idx[end], "direction": "up" if sign > 0 else "down",
                           "magnitude": float(s.iloc[end] - s.iloc[run_start])})
            run_start = k if f else None
            if f:
                sign = np.sign(d)
    if run_start is not None:
        end = len(s) - 1
        events.append({"start": idx[run_start], "end": idx[end], "direction": "up" if sign > 0 else "down",
                       "magnitude": float(s.iloc[end] - s.iloc[run_start])})
    merged: list[dict] = []
    for e in events:  # overlapping detections of one ramp become one event
        if merged and e["direction"] == merged[-1]["direction"] and e["start"] <= merged[-1]["end"]:
            merged[-1]["end"] = max(merged[-1]["end"], e["end"])
            merged[-1]["magnitude"] = float(s.loc[merged[-1]["end"]] - s.loc[merged[-1]["start"]])
        else:
            merged.append(dict(e))
    return pd.DataFrame(merged, columns=["start", "end", "direction", "magnitude"])


def variability_index(ghi: pd.Series, ghi_clear: pd.Series, step_minutes: float) -> float | None:
    """Stein et al. (2012): length of the GHI curve over that of the clear-sky curve (1 = smooth)."""
    g, c = ghi.astype(float).to_numpy(), ghi_clear.astype(float).to_numpy()
    ok = np.isfinite(g) & np.isfinite(c)
    if ok.sum() < 3 or np.nansum(c[ok]) <= 0:
        return None
    dg, dc = np.diff(g[ok]), np.diff(c[ok])
    return float(np.sum(np.sqrt(dg ** 2 + step_minutes ** 2)) / np.sum(np.sqrt(dc ** 2 + step_minutes ** 2)))


# ------------------------------------------------------------------------------- backtests
def _scores(actual: np.ndarray, q: np.ndarray) -> dict:
    ok = np.isfinite(actual) & np.isfinite(q).all(axis=1)
    a, p10, p50, p90 = actual[ok], q[ok, 0], q[ok, 1], q[ok, 2]
    pin = np.mean([np.mean(np.maximum(t * (a - p), (t - 1) * (a - p))) for t, p in zip(QUANTILES, (p10, p50, p90))])
    return {"n": int(ok.sum()), "nmae": float(np.mean(np.abs(a - p50))), "nrmse": float(np.sqrt(np.mean((a - p50) ** 2))),
            "pinball": float(pin), "coverage_p10_p90": float(np.mean((a >= p10) & (a <= p90)))}


def load_gefcom_wind(data_dir=None) -> pd.DataFrame:
    """GEFCom2012 wind: per farm and hour, measured power (fraction of rating) and the 1-24 h ahead
    NWP wind speed/direction from the forecast issued at 00:00 or 12:00 (the latest before it)."""
    from gridpipeline.forecast.datasets import shared_data_dir

    base = (data_dir or shared_data_dir()) / "gefcom2012" / "wind"
    power = pd.read_csv(base / "train.csv", sep=None, engine="python")  # tab-separated, quoted header
    power["time"] = pd.to_datetime(power["date"].astype(str), format="%Y%m%d%H")
    frames = []
    for k in range(1, 8):
        f = pd.read_csv(base / f"windforecasts_wf{k}.csv")
        f["issue"] = pd.to_datetime(f["date"].astype(str), format="%Y%m%d%H")
        f["time"] = f["issue"] + pd.to_timedelta(f["hors"], unit="h")
        f = f[(f.hors >= 1) & (f.hors <= 12)]  # the freshest issue for each hour
        f = f.sort_values("issue").drop_duplicates("time", keep="last")
        p = power[["time", f"wp{k}"]].rename(columns={f"wp{k}": "power"})
        frames.append(f[["time", "ws", "wd", "hors"]].merge(p, on="time").assign(farm=f"wp{k}"))
    return pd.concat(frames, ignore_index=True)


def wind_backtest(data: pd.DataFrame, split: str = "2010-07-01", turbine: str = "E-82/2300",
                  hub_shear: float = 1 / 7, return_model: bool = False) -> dict:
    """Train the correction per all farms before ``split``, score after it: physics only, persistence-
    free climatology (the training mean), and physics + correction. Fractions of the rating."""
    d = data.dropna(subset=["ws", "power"]).copy()
    hub = d.ws.to_numpy() * (100 / 10) ** hub_shear
    phys = wind_physics(hub, 1.0, turbine)
    X = wind_features(hub, d.wd.to_numpy(), pd.DatetimeIndex(d.time), phys)
    X["farm"] = d.farm.str[2:].astype(int).to_numpy()
    train = (d.time < split).to_numpy()
    corr = Correction(list(X.columns)).fit(X[train], d.power.to_numpy()[train])
    q = corr.predict(X[~train])
    a = d.power.to_numpy()[~train]
    clim = np.full((len(a), 3), np.quantile(d.power[train], [0.1, 0.5, 0.9]))
    out = {"test_rows": int((~train).sum()), "physics": _scores(a, np.column_stack([phys[~train]] * 3)),
           "climatology": _scores(a, clim), "corrected": _scores(a, q)}
    if return_model:
        out["model"] = corr
    return out


def pv_backtest(data_dir=None, capacity_w: float | None = None, latitude: float = 39.742, longitude: float = -105.18,
                train_frac: float = 0.6, return_model: bool = False) -> dict:
    """pvanalytics' SERF East (NREL Golden, 15-minute AC power with PSM3 weather): physics vs physics +
    correction on the later part of the record, fractions of the (observed) rating."""
    import importlib.resources

    base = importlib.resources.files("pvanalytics") / "data"
    ac = pd.read_csv(base / "serf_east_15min_ac_power.csv", parse_dates=["measured_on"])
    wx = pd.read_csv(base / "serf_east_psm3_data.csv", parse_dates=["measured_on"])
    df = ac.merge(wx, on="measured_on")
    df.index = pd.DatetimeIndex(pd.to_datetime(df.measured_on, utc=True))
    cap = capacity_w or float(df.ac_power.quantile(0.995))
    weather = pd.DataFrame({"ghi": df.ghi, "temperature": df.temp_air}, index=df.index)
    weather["clear_sky_index"] = np.where(df.ghi_clear > 20, df.ghi / df.ghi_clear.replace(0, np.nan), np.nan)
    phys = pv_physics(weather, latitude, longitude, 1.0).to_numpy()
    X = pv_features(weather, latitude, longitude, phys)
    y = (df.ac_power.clip(lower=0) / cap).to_numpy()
    cut = int(len(df) * train_frac)
    train = np.arange(len(df)) < cut
    day = (X.elevation > 0).to_numpy()
    corr = Correction(list(X.columns)).fit(X[train & day], y[train & day])
    q = np.zeros((len(df), 3))
    q[day] = corr.predict(X[day])
    test = ~train & day
    out = {"test_rows": int(test.sum()), "rating_w": cap,
           "physics": _scores(y[test], np.column_stack([phys[test]] * 3)),
           "corrected": _scores(y[test], q[test])}
    if return_model:
        out["model"] = corr
    return out
