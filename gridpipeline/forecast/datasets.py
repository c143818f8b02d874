"""Loaders that turn the shared real datasets into tidy frames the backtest accepts.

The files live beside the project at ``../shared/data`` (see ``shared/data/README.md``); they are not
redistributed with the project. Each loader returns one row per time step with a ``time`` column
and the target and weather columns:

* :func:`load_gefcom_system` -- GEFCom2012 load track, system total (zone 21 = sum of zones 1-20),
  hourly, with the 11 temperature stations ``t1``..``t11`` (degrees F). The competition data carry
  no time zone and 24 values every day (no daylight saving), so ``time`` is naive local time and
  the backtest runs with ``--tz UTC`` (i.e. "take the clock as it is"). ``h1`` is the hour ending
  01:00; it is stamped at the start of its period, 00:00.
* :func:`load_vic_elec` -- Victoria (Australia) half-hourly demand (MW) with Melbourne temperature
  (degrees C). ``time`` is UTC; run the backtest with ``--tz Australia/Melbourne``.

Export both as CSV files for the CLI::

    uv run python -m gridpipeline.forecast.datasets --out var/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

GEFCOM_STATIONS = [f"t{i}" for i in range(1, 12)]


def shared_data_dir() -> Path:
    """The shared data folder (``../shared/data`` next to the checkout)."""
    return SHARED_DATA


def _day_hours_long(frame: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """GEFCom layout (one row per id and day, columns h1..h24) -> long (id, time, value)."""
    hours = [f"h{i}" for i in range(1, 25)]
    dates = pd.to_datetime(frame[["year", "month", "day"]])
    values = frame[hours].to_numpy(dtype=float)
    n = len(frame)
    times = (dates.to_numpy()[:, None] + (np.arange(24) * np.timedelta64(1, "h"))[None, :]).ravel()
    return pd.DataFrame(
        {id_col: np.repeat(frame[id_col].to_numpy(), 24), "time": times, "value": values.reshape(n * 24)}
    )


def _gefcom_tables(data_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(zone loads: time x zone 1..20, blank weeks filled; temperatures: time x t1..t11)."""
    base = Path(data_dir or SHARED_DATA) / "gefcom2012" / "load"
    hist = pd.read_csv(base / "Load_history.csv", thousands=",")
    sol = pd.read_csv(base / "Load_solution.csv", thousands=",")
    sol = sol[sol["zone_id"].between(1, 20)].drop(columns=["id", "weight"])
    load = _day_hours_long(hist, "zone_id").set_index(["zone_id", "time"])["value"]
    fill = _day_hours_long(sol, "zone_id").set_index(["zone_id", "time"])["value"]
    fill = fill[fill.index.isin(load.index)]
    load = load.copy()
    missing = load.isna() & load.index.isin(fill.index)
    load[missing] = fill.reindex(load.index[missing]).to_numpy()
    wide = load.unstack("zone_id")

    temp = pd.read_csv(base / "temperature_history.csv")
    t_long = _day_hours_long(temp, "station_id")
    t_wide = t_long.pivot(index="time", columns="station_id", values="value")
    # The competition's forecast-week temperatures (from 2008-06-30 07:00) fill the history's tail.
    tsol = pd.read_csv(base / "temperature_solution.csv")
    tsol_time = pd.to_datetime(tsol["date"], format="%d%b%Y") + pd.to_timedelta(tsol["hour"] - 1, unit="h")
    tsol_wide = pd.DataFrame({"time": tsol_time, "station_id": tsol["station_id"], "value": tsol["T0_p1"]})
    tsol_wide = tsol_wide.pivot(index="time", columns="station_id", values="value")
    t_wide = t_wide.combine_first(tsol_wide)
    t_wide.columns = [f"t{int(c)}" for c in t_wide.columns]
    return wide, t_wide


def load_gefcom_zones(data_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GEFCom2012 zone loads (hourly, time x zone 1..20) and the 11 temperature stations."""
    return _gefcom_tables(data_dir)


def load_gefcom_system(data_dir: Path | None = None) -> pd.DataFrame:
    """GEFCom2012 system load (sum of zones 1-20) with the 11 temperature stations, hourly.

    Blank weeks of ``Load_history.csv`` are filled from ``Load_solution.csv``. Returns columns
    ``time`` (naive, period start), ``load`` and ``t1``..``t11``; 2004-01-01 00:00 .. 2008-07-07 23:00
    (the load of 2008-06-30 06:00-23:00 is not published and stays missing).
    """
    wide, t_wide = _gefcom_tables(data_dir)
    # The system total is defined only where every zone reported.
    system = wide.sum(axis=1, min_count=wide.shape[1]).where(wide.notna().all(axis=1))
    out = pd.DataFrame({"load": system}).join(t_wide, how="left")
    out.index.name = "time"
    return out.reset_index()


def load_vic_elec(data_dir: Path | None = None) -> pd.DataFrame:
    """Victoria half-hourly demand with Melbourne temperature: columns ``time`` (UTC), ``demand``,
    ``temperature``; 2012-01-01 .. 2014-12-31 local time."""
    path = Path(data_dir or SHARED_DATA) / "vic_elec" / "vic_elec.csv"
    raw = pd.read_csv(path)
    time = pd.to_datetime(raw["Time"], utc=True)
    return pd.DataFrame(
        {"time": time, "demand": raw["Demand"].astype(float), "temperature": raw["Temperature"].astype(float)}
    )


def export(out_dir: Path, data_dir: Path | None = None) -> dict[str, Path]:
    """Write ``gefcom_system.csv`` and ``vic_elec.csv`` to ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    g = load_gefcom_system(data_dir)
    g["time"] = g["time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    paths["gefcom_system"] = out_dir / "gefcom_system.csv"
    g.to_csv(paths["gefcom_system"], index=False)
    v = load_vic_elec(data_dir)
    v["time"] = v["time"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    paths["vic_elec"] = out_dir / "vic_elec.csv"
    v.to_csv(paths["vic_elec"], index=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gridpipeline.forecast.datasets",
        description="Export the shared real datasets (GEFCom2012 system, Victoria) as CSV for the backtest.",
    )
    parser.add_argument("--out", type=Path, default=Path("var"), help="output folder (default: var/)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help=f"shared data folder (default: {SHARED_DATA})"
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir or SHARED_DATA
    if not data_dir.is_dir():
        parser.error(f"shared data folder not found: {data_dir}")
    for name, path in export(args.out, data_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
