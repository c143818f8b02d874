"""``gridpipeline forecast ...``: demand-forecast backtests from a CSV or Parquet file.

    gridpipeline forecast backtest --data var/vic_elec.csv --time-col time --target-col demand \\
        --weather-cols temperature --tz Australia/Melbourne --country AU --subdiv VIC \\
        --start 2014-01-01 --end 2015-01-01 --out var/vic_metrics.json

Rolling origin, leakage-free: each forecast (issued daily at ``--issue-time`` local time) sees the
target only before its issue time; the weather columns over the horizon stand in for the weather
forecast (the measured weather is used as a perfect forecast).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

forecast_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@forecast_app.callback()
def _group() -> None:
    """Demand forecasting (see ``gridpipeline forecast backtest --help``)."""


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def read_table(path: Path):
    """Read a CSV or Parquet file into a DataFrame (``.parquet``/``.pq`` by extension, else CSV)."""
    import pandas as pd

    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _timestamp(value: str, tz: str, name: str):
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        _fail(f"--{name}: cannot read {value!r} as a date or time")
    if ts is pd.NaT:
        _fail(f"--{name}: cannot read {value!r} as a date or time")
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return ts.tz_convert("UTC")


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item"):  # numpy scalars
        return _json_safe(obj.item())
    return obj


Opt = typer.Option


@forecast_app.command("backtest")
def backtest(
    data: Annotated[Path, Opt("--data", help="CSV or Parquet file, one row per time step.")],
    time_col: Annotated[
        str, Opt("--time-col", help="Time column (ISO times; naive times are local in --tz).")
    ],
    target_col: Annotated[str, Opt("--target-col", help="Column to forecast (any unit).")],
    out: Annotated[Path, Opt("--out", help="Where to write metrics.json.")],
    weather_cols: Annotated[
        str | None,
        Opt(
            "--weather-cols",
            help="Comma-separated temperature columns (one per station; with several, the stations to average "
            "are learnt by CV inside the training span). Used over the horizon as a perfect forecast.",
        ),
    ] = None,
    freq: Annotated[
        str | None, Opt("--freq", help="Native resolution, e.g. 1h or 30min (default: inferred).")
    ] = None,
    horizon: Annotated[str, Opt("--horizon", help="Forecast horizon.")] = "24h",
    issue_time: Annotated[
        str, Opt("--issue-time", help="Local time of day forecasts are issued (HH:MM).")
    ] = "00:00",
    tz: Annotated[str, Opt("--tz", help="IANA time zone for calendar features and issue times.")] = "UTC",
    start: Annotated[
        str | None, Opt("--start", help="First issue date (local; default: a year before the end).")
    ] = None,
    end: Annotated[
        str | None, Opt("--end", help="End of the test span, exclusive (local; default: end of data).")
    ] = None,
    models: Annotated[
        str, Opt("--models", help="'live' scores the deployed path (forecast/deployed.py: the global LightGBM + "
                 "Prophet blend with the live training window and weekly refit); lgbm, prophet or lgbm,prophet "
                 "score the per-series research ensemble of forecast/demand.py.")
    ] = "live",
    train_days: Annotated[
        int | None, Opt("--train-days", help="With --models live: days of history per fit (default: the live "
                        "setting GRIDPIPELINE_FORECAST_TRAIN_DAYS).")
    ] = None,
    refit_days: Annotated[float, Opt("--refit-days", help="Refit every N days (re-used in between).")] = 7.0,
    country: Annotated[
        str | None, Opt("--country", help="Holiday calendar (ISO code, e.g. US, AU, DE).")
    ] = None,
    subdiv: Annotated[str | None, Opt("--subdiv", help="Holiday subdivision (e.g. VIC).")] = None,
    threads: Annotated[int, Opt("--threads", help="LightGBM threads (1 is fastest on a busy machine).")] = 1,
    forecasts_out: Annotated[
        Path | None, Opt("--forecasts-out", help="Also write every forecast row (CSV/Parquet).")
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress lines on stderr.")] = False,
) -> None:
    """Rolling-origin backtest with P10/P50/P90, against seasonal-naive and vanilla baselines."""
    import pandas as pd

    from gridpipeline.forecast import deployed
    from gridpipeline.forecast.backtest import run_backtest, run_backtest_live
    from gridpipeline.forecast.demand import ForecastConfig
    from gridpipeline.forecast.features import prepare_series

    if not data.exists():
        _fail(f"--data: file not found: {data}")
    try:
        frame = read_table(data)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes one clear message
        _fail(f"--data: cannot read {data}: {exc}")
    weather = _split(weather_cols)
    wanted = {"--time-col": [time_col], "--target-col": [target_col], "--weather-cols": weather}
    missing = [(opt, c) for opt, cols in wanted.items() for c in cols if c not in frame.columns]
    if missing:
        named = ", ".join(f"{c!r} ({opt})" for opt, c in missing)
        _fail(f"column(s) not in {data.name}: {named}; available: {', '.join(map(str, frame.columns))}")
    try:
        hz = pd.Timedelta(horizon)
    except ValueError:
        _fail(f"--horizon: cannot read {horizon!r} as a duration (e.g. 24h, 48h, 1d)")
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except Exception:  # noqa: BLE001
        _fail(f"--tz: unknown time zone {tz!r}")
    if freq is not None:
        try:
            pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        except (ValueError, TypeError):
            _fail(f"--freq: cannot read {freq!r} as a resolution (e.g. 1h, 30min, 5min)")
    if refit_days <= 0:
        _fail("--refit-days must be positive")
    live = models.strip() == "live"
    if live and not weather:
        _fail("--models live: the deployed path needs a temperature column (--weather-cols)")
    if live:
        from gridpipeline.settings import Settings

        train_days = Settings().forecast_train_days if train_days is None else train_days
    try:
        cfg = ForecastConfig(
            horizon=hz,
            issue_time=issue_time,
            tz=tz,
            weather_cols=tuple(weather),
            country=country,
            subdiv=subdiv,
            models=("lgbm", "prophet") if live else tuple(_split(models)),
            threads=threads,
        )
    except ValueError as exc:
        _fail(str(exc))
    if country:
        from gridpipeline.forecast.features import holiday_dates

        try:
            holiday_dates(country, subdiv, [2020])
        except Exception as exc:  # noqa: BLE001 - holidays raises NotImplementedError for unknown codes
            _fail(f"--country/--subdiv: {exc}")
    try:
        series = prepare_series(
            frame,
            time_col,
            target_col,
            weather,
            tz=tz,
            freq=pd.Timedelta(pd.tseries.frequencies.to_offset(freq)) if freq else None,
        )
    except (ValueError, TypeError) as exc:
        _fail(f"--time-col {time_col!r}: {exc}")
    if series["y"].notna().sum() == 0:
        _fail(f"--target-col {target_col!r}: no numeric values")
    t_start = _timestamp(start, tz, "start") if start else None
    t_end = _timestamp(end, tz, "end") if end else None
    if t_start is not None and t_end is not None and t_start >= t_end:
        _fail("--start must be before --end")
    progress = None if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        if live:
            result = run_backtest_live(series, cfg, train_days, t_start, t_end, refit=pd.Timedelta(days=refit_days),
                                       progress=progress)
        else:
            result = run_backtest(series, cfg, t_start, t_end, refit_days=refit_days, progress=progress)
    except ValueError as exc:
        _fail(str(exc))
    metrics = result.metrics
    metrics["config"] = {
        "data": str(data),
        "time_col": time_col,
        "target_col": target_col,
        "weather_cols": weather,
        "freq": str(series.index[1] - series.index[0]),
        "horizon": str(hz),
        "issue_time": issue_time,
        "tz": tz,
        "start": str(t_start) if t_start is not None else None,
        "end": str(t_end) if t_end is not None else None,
        "models": ["live"] if live else list(cfg.models),
        "refit_days": (deployed.REFIT / pd.Timedelta(days=1)) if live else refit_days,
        "train_days": train_days if live else None,
        "country": country,
        "subdiv": subdiv,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_json_safe(metrics), indent=1))
    if forecasts_out is not None:
        forecasts_out.parent.mkdir(parents=True, exist_ok=True)
        f = result.forecasts
        if forecasts_out.suffix.lower() in (".parquet", ".pq"):
            f.to_parquet(forecasts_out, index=False)
        else:
            f.to_csv(forecasts_out, index=False)
    van = metrics["baselines"]["vanilla"].get("mape")
    typer.echo(
        json.dumps(
            _json_safe(
                {
                    "mape": metrics["mape"],
                    "vanilla_mape": van,
                    "ratio": metrics["mape_ratio_to_vanilla"],
                    "rmae": metrics["rmae"],
                    "coverage_p10_p90": metrics["coverage_p10_p90"],
                    "n_forecasts": metrics["n_forecasts"],
                    "model_usage": metrics["model_usage"],
                    "seconds": metrics["total_seconds"],
                    "out": str(out),
                }
            )
        )
    )


if __name__ == "__main__":  # python -m gridpipeline.forecast.cli backtest ...
    forecast_app()
