"""The grid's PV and wind forecast over a weather forecast, as plain frames: physics from the weather,
corrected by the learnt quantile models when they exist (``corrected``), else the physics with a
fixed band (``physics``); forecast ramp events per kind. The asset only reads and writes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.forecast.renewables import (
    pv_features,
    pv_physics,
    ramp_events,
    wind_features,
    wind_physics,
)

PV_TYPES = ("PV", "lv_RES")  # SimBench: LV renewables are rooftop PV
WIND_TYPES = ("Wind",)
KINDS = {"pv": PV_TYPES, "wind": WIND_TYPES}
#: P10/P90 of the uncorrected physics, relative to its P50
PHYSICS_BAND = (0.8, 1.2)


def generation_forecast(wx: pd.DataFrame, latitude: float, longitude: float, capacity_mw: dict[str, float],
                        corrections: dict[str, object | None]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(forecast rows, ramp events, per-kind figures) for the kinds with capacity.

    ``wx``: weather features on a UTC index (``ghi``, ``temperature``, ``wind_speed_10m``,
    ``wind_speed_hub``); ``corrections``: the learnt model per kind, or None. Steps whose weather is
    missing get NaN rather than a made-up number."""
    frames, ramps, meta = [], [], {}
    for kind in KINDS:
        cap = float(capacity_mw.get(kind, 0.0))
        if cap <= 0:
            continue
        if kind == "pv":
            phys = pv_physics(wx, latitude, longitude, cap).to_numpy()
            X = pv_features(wx, latitude, longitude, phys / cap)
        else:
            phys = wind_physics(wx.wind_speed_hub.to_numpy(), cap)
            X = wind_features(wx.wind_speed_hub.to_numpy(), None, wx.index, phys / cap)
            X["farm"] = 0
        missing = wx[["ghi"] if kind == "pv" else ["wind_speed_hub"]].isna().any(axis=1).to_numpy()
        model = corrections.get(kind)
        if model is not None:
            q = model.predict(X) * cap
            if kind == "pv":  # no output without sun, whatever the model says
                q[(X.elevation <= 0).to_numpy()] = 0.0
            label = "corrected"
        else:
            q = np.column_stack([phys * PHYSICS_BAND[0], phys, np.minimum(phys * PHYSICS_BAND[1], cap)])
            label = "physics"
        q = np.sort(np.clip(q, 0.0, cap), axis=1)
        q[missing] = np.nan
        phys = np.where(missing, np.nan, phys)
        frames.append(pd.DataFrame({"kind": kind, "valid_time": wx.index, "capacity_mw": cap, "physics_mw": phys,
                                    "p10": q[:, 0], "p50": q[:, 1], "p90": q[:, 2], "model": label}))
        p50 = pd.Series(q[:, 1], index=wx.index).dropna()
        ev = ramp_events(p50, cap, threshold=0.1, window=6) if len(p50) > 6 else pd.DataFrame(
            columns=["start", "end", "direction", "magnitude"])
        ramps.append(ev.assign(kind=kind))
        meta.update({f"{kind}_capacity_mw": round(cap, 3), f"{kind}_model": label, f"{kind}_ramps": len(ev),
                     f"{kind}_p50_peak_mw": round(float(np.nanmax(q[:, 1])), 3) if np.isfinite(q[:, 1]).any() else None,
                     f"{kind}_energy_24h_mwh": round(float(np.nansum(q[:, 1]) * 5 / 60), 2)})
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    found = [r for r in ramps if len(r)]  # empty frames would decide the dtypes (a pandas deprecation)
    rp = pd.concat(found, ignore_index=True) if found else (ramps[0] if ramps else pd.DataFrame())
    return out, rp, meta


def measured_ramps(measured: pd.DataFrame, capacity_mw: dict[str, float], min_points: int = 12
                   ) -> tuple[pd.DataFrame, dict]:
    """Ramp events of what was measured (columns ``gen:<kind>``), per kind with capacity."""
    frames, meta = [], {}
    for kind in KINDS:
        col, cap = f"gen:{kind}", capacity_mw.get(kind, 0.0)
        if not cap:
            continue
        if len(measured) and col in measured and measured[col].notna().sum() > min_points:
            ev = ramp_events(measured[col].dropna(), cap, threshold=0.1, window=6)
            meta[f"{kind}_measured_ramps_24h"] = len(ev)
            frames.append(ev.assign(kind=f"{kind} (measured)"))
        else:
            meta[f"{kind}_measured_ramps_24h"] = "no measurements yet"
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), meta


def _naive_utc(t) -> pd.Timestamp:
    t = pd.Timestamp(t)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t


def generation_rows(out: pd.DataFrame, ramps: pd.DataFrame, issue: pd.Timestamp, stale: bool
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of forecast.generation and forecast.ramps for ``issue``: leads in minutes, and every time
    naive UTC like every other time in the store (forecast ramps carry the weather's UTC index, measured
    ones the telemetry's; both become plain TIMESTAMPs, never Python objects DuckDB cannot convert)."""
    issue_n = _naive_utc(issue)
    if len(out):
        lead = ((pd.DatetimeIndex(out.valid_time) - issue) / pd.Timedelta(minutes=5)).astype(int) + 1
        out = out.assign(issue_time=issue_n, lead_minutes=np.asarray(lead) * 5, weather_stale=stale,
                         valid_time=pd.DatetimeIndex(out.valid_time).tz_convert("UTC").tz_localize(None))
    if len(ramps):
        ramps = ramps.assign(issue_time=issue_n, **{
            c: pd.DatetimeIndex([_naive_utc(t) for t in ramps[c]]).astype("datetime64[us]") for c in ("start", "end")})
    return out, ramps


def write_generation(con, issue: pd.Timestamp, out: pd.DataFrame, ramps: pd.DataFrame) -> None:
    """Replace ``issue``'s rows of forecast.generation and forecast.ramps in one transaction."""
    issue_n = _naive_utc(issue)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM forecast.generation WHERE issue_time = ?", [issue_n])
        con.execute("DELETE FROM forecast.ramps WHERE issue_time = ?", [issue_n])
        if len(out):
            con.register("_gen", out)
            con.execute("INSERT INTO forecast.generation BY NAME SELECT * FROM _gen")
            con.unregister("_gen")
        if len(ramps):
            con.register("_rp", ramps)
            con.execute("INSERT INTO forecast.ramps BY NAME SELECT * FROM _rp")
            con.unregister("_rp")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
