"""The DER owners of the simulated field on the local flexibility market: their standing offers.

The way GOPACS or NODES work, owners of flexible assets post what they can do and at what price; the
operator buys from them when a line is congested. Here each owner posts, a day ahead, one offer per
asset and delivery day to the platform's file drop (``offers-YYYY-MM-DD.csv``, UTC days):

* every renewable generator (PV, wind) offers to **reduce its output** (direction ``down``, which
  relieves a line carrying export out of its area), at the feed-in it gives up plus its owner's
  premium: 60-110 EUR/MWh for PV, 50-100 for wind. A generator that follows the weather offers hour by
  hour what it expects to produce (it cannot give up more): its rating times the output the weather
  service's 06 UTC run of the day before (the newest out at noon) gives through the same physics the
  field follows (the public
  forecast any owner can read, never the weather that comes), so a PV plant offers nothing at night.
  Another generator (biomass, hydro) offers its rating for the day;
* every commercial and industrial site offers to **reduce its demand** (direction ``up``: less load is
  more injection, which relieves a line carrying load into its area) by a fifth of its nominal load,
  at 150-400 EUR/MWh (the production or comfort it gives up).

Prices are the owners' own (a hash of the seed, the asset and the day: stable across restarts). The
pipeline sees only the files.

**Activation.** The platform's answer comes back to the drop's ``awards/`` folder
(``awards-<decision>.csv``: offer_id, owner, hour, mw). An owner delivers what it was awarded over the
awarded hour (:meth:`FlexOwners.apply`): a generator produces that much less (never below nothing), a
site draws that much less (never below 5 % of its load), so the relief shows in the telemetry.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["offer_id", "owner", "bus", "direction", "mw", "price_eur_mwh", "valid_from", "valid_to", "divisible"]


def _u(*key) -> float:
    h = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2 ** 64


def expected_output(world, day, seed: int = 0) -> pd.DataFrame | None:
    """The output each weather-driven generator's owner expects over delivery ``day`` (UTC): hourly rows
    (UTC starts) by sgen index, as fractions of its rating, from the weather service's 06 UTC run of the
    day before (out by the time the owners post at noon), through the physics the field follows. None
    for a world without weather."""
    from gridpipeline.common.renewables import hub_wind_speed, pv_physics, wind_physics
    from gridpipeline.world.weather_service import WeatherService

    loc = world.meta.get("location") or {}
    pv, wind = getattr(world, "_pv_cols", ()), getattr(world, "_wind_cols", ())
    if getattr(world, "weather", None) is None or "latitude" not in loc or not (len(pv) or len(wind)):
        return None
    d = pd.Timestamp(day).normalize()
    hours = pd.date_range(d, periods=24, freq="h", tz="UTC")
    ws = WeatherService(world, Path("."), seed)  # forecast_run writes nothing
    # the 06 UTC run of the day before: the newest one out (3 h after its start) when the owners post at noon
    fc = ws.forecast_run(hours[0] - pd.Timedelta(hours=18)).reindex(hours).ffill().bfill()
    out = pd.DataFrame(np.nan, index=hours.tz_localize(None), columns=world.net.sgen.index)
    if len(pv):
        frame = pd.DataFrame({"ghi": fc["ghi"].to_numpy(), "temperature": fc["temp_air"].to_numpy(),
                              "wind_speed_10m": fc["wind_speed"].to_numpy()}, index=hours)
        f = np.clip(pv_physics(frame, loc["latitude"], loc["longitude"], 1.0).to_numpy(float), 0.0, 1.0)
        out.iloc[:, list(pv)] = f[:, None]
    if len(wind):
        f = np.clip(np.asarray(wind_physics(hub_wind_speed(fc["wind_speed"]), 1.0), float), 0.0, 1.0)
        out.iloc[:, list(wind)] = f[:, None]
    return out


def standing_offers(net, load_class: dict[int, str], day, seed: int = 0,
                    expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """The owners' offers for delivery ``day`` (a date, UTC). ``expected`` (:func:`expected_output`):
    the generators in it offer hour by hour their rating times what they expect to produce."""
    d = pd.Timestamp(day).normalize()
    rows = []
    sg = net.sgen
    kind = sg["type"].astype(str) if "type" in sg else pd.Series("PV", index=sg.index)
    rating = pd.to_numeric(sg.sn_mva, errors="coerce") if "sn_mva" in sg else sg.p_mw
    for i in sg.index:
        wind = str(kind[i]).lower().startswith("wind")
        lo, hi = (50.0, 100.0) if wind else (60.0, 110.0)
        mw = float(np.nan_to_num(rating.get(i, np.nan), nan=float(sg.p_mw[i])))
        if mw <= 0:
            continue
        row = {"owner": f"sgen-{i}", "bus": int(sg.bus[i]), "direction": "down",
               "price_eur_mwh": round(lo + (hi - lo) * _u(seed, "gen", int(i), str(d.date())), 2)}
        if expected is not None and i in expected and expected[i].notna().all():
            for h, f in expected[i].items():
                if mw * f >= 1e-3:
                    rows.append({**row, "mw": round(mw * float(f), 4), "valid_from": h,
                                 "valid_to": h + pd.Timedelta(hours=1)})
        else:
            rows.append({**row, "mw": round(mw, 4)})
    for i in net.load.index:
        if load_class.get(int(i)) not in ("commercial", "industrial"):
            continue
        mw = 0.2 * float(net.load.p_mw[i])
        if mw < 0.005:
            continue
        rows.append({"owner": f"load-{i}", "bus": int(net.load.bus[i]), "direction": "up", "mw": round(mw, 4),
                     "price_eur_mwh": round(150.0 + 250.0 * _u(seed, "load", int(i), str(d.date())), 2)})
    out = pd.DataFrame(rows, columns=["owner", "bus", "direction", "mw", "price_eur_mwh", "valid_from", "valid_to"])
    hourly = out.valid_from.notna()
    out.insert(0, "offer_id", [f"{o}-{d:%Y%m%d}" + (f"T{pd.Timestamp(v):%H}" if h else "")
                               for o, v, h in zip(out.owner, out.valid_from, hourly, strict=True)])
    out["valid_from"] = pd.to_datetime(out.valid_from.where(hourly, d))
    out["valid_to"] = pd.to_datetime(out.valid_to.where(hourly, d + pd.Timedelta(days=1)))
    out["divisible"] = True
    return out[COLUMNS]


class FlexOwners:
    """Posts the owners' offers to ``folder``, a day ahead (by noon UTC the day before)."""

    def __init__(self, world, folder: Path, customers_path: Path | None = None, seed: int = 0):
        self.world, self.folder, self.seed = world, Path(folder), seed
        self.load_class: dict[int, str] = {}
        if customers_path is not None and Path(customers_path).exists():
            c = pd.read_csv(customers_path)
            self.load_class = {int(i): str(k) for i, k in zip(c.load_id, c["class"], strict=True)}

    def awards(self) -> pd.DataFrame:
        """Every award posted to ``awards/`` (re-read when the folder's files change)."""
        folder = self.folder / "awards"
        files = sorted(folder.glob("awards-*.csv")) if folder.exists() else []
        key = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        if key != getattr(self, "_awards_key", None):
            parts = []
            for f in files:
                try:
                    parts.append(pd.read_csv(f, parse_dates=["hour"]))
                except (OSError, ValueError, KeyError):
                    continue  # the owner cannot read it: it does not act on it
            self._awards = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
                columns=["offer_id", "owner", "hour", "mw"])
            self._awards_key = key
        return self._awards

    def apply(self, times: pd.DatetimeIndex, inj):
        """``inj`` with every award in force at ``times`` delivered by its owner."""
        from dataclasses import replace

        aw = self.awards()
        if not len(aw):
            return inj
        t = (times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times).to_numpy()
        net = self.world.net
        sg_pos = {f"sgen-{i}": k for k, i in enumerate(net.sgen.index)}
        ld_pos = {f"load-{i}": k for k, i in enumerate(net.load.index)}
        sgen, load = inj.sgen_p_mw.copy(), inj.load_p_mw.copy()
        for a in aw.itertuples():
            h = np.datetime64(pd.Timestamp(a.hour).tz_localize(None) if pd.Timestamp(a.hour).tzinfo is None
                              else pd.Timestamp(a.hour).tz_convert("UTC").tz_localize(None))
            on = (t >= h) & (t < h + np.timedelta64(1, "h"))
            if not on.any():
                continue
            if a.owner in sg_pos:
                k = sg_pos[a.owner]
                sgen[on, k] = np.clip(sgen[on, k] - float(a.mw), 0.0, None)
            elif a.owner in ld_pos:
                k = ld_pos[a.owner]
                load[on, k] = np.maximum(load[on, k] - float(a.mw), 0.05 * load[on, k])
        return replace(inj, sgen_p_mw=sgen, load_p_mw=load)

    def publish(self, start, now) -> list[Path]:
        """Every day's file from ``start``'s day to the day after ``now`` once it is past noon; returns the new."""
        now = pd.Timestamp(now)
        last = now.normalize() + pd.Timedelta(days=1 if now.hour >= 12 else 0)
        out = []
        self.folder.mkdir(parents=True, exist_ok=True)
        for d in pd.date_range(pd.Timestamp(start).normalize(), last, freq="D"):
            f = self.folder / f"offers-{d:%Y-%m-%d}.csv"
            if f.exists():
                continue
            tmp = f.with_suffix(".tmp")
            standing_offers(self.world.net, self.load_class, d, self.seed,
                            expected_output(self.world, d, self.seed)).to_csv(tmp, index=False)
            tmp.rename(f)
            out.append(f)
        return out
