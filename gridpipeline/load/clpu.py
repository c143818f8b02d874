"""Cold-load pickup, calibrated from the pipeline's own history: the telemetry of the blocks it restored.

For each block a restoration record (or a shed schedule's switching) closed again, the block's loads'
active power readings (30-second telemetry) give

* the level before the outage: the mean over the 15 minutes before the block's power fell to zero;
* the instant it came back: the first reading after the outage above 5 % of that level;
* the pickup ratio over the next hour: the power, per minute, over the level before.

The excess ``ratio - 1`` is fitted to ``(peak - 1) * exp(-t / tau)`` by least squares on its
logarithm, over the minutes it stands above 2 %: one ``tau`` for all events and one ``peak`` per
event. The calibration is the 90th percentile of the peaks of the outages of 10 minutes or more (the
peak grows with the outage's length; a stage must hold after a long one) and the common ``tau``; the responder sizes its restoration stages with them (``<home>/load/clpu.json``), and with
the literature's 2.0 and 20 minutes until there are three such events.

Pure functions on frames; the ``clpu_calibration`` asset reads the ledger and the telemetry.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_FACTOR = 2.0
DEFAULT_DECAY_MIN = 20.0
MIN_EVENTS = 3
MIN_OFF_MIN = 10.0


@dataclass
class Calibration:
    factor: float
    decay_min: float
    events: int
    basis: str
    computed_at: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def default() -> Calibration:
    return Calibration(DEFAULT_FACTOR, DEFAULT_DECAY_MIN, 0,
                       "literature (Ucak and Pahwa 1994; Kumar et al. 2008): 1.5-2x, decaying over 15-30 min")


def pickup_curves(readings: pd.DataFrame, load_block: pd.Series, restored: list[tuple[int, datetime]],
                  after_min: int = 60) -> pd.DataFrame:
    """One row per (event, minute after re-energisation): block, restored_at (the telemetry's instant),
    off_min, minute, ratio. ``readings``: load_id, ts, mw (the loads' P telemetry); ``restored``:
    (block, when the pipeline closed it)."""
    rows = []
    r = readings.assign(block=load_block.reindex(readings.load_id).to_numpy())
    for block, at in restored:
        g = r[r.block == block]
        if g.empty:
            continue
        s = g.groupby("ts").mw.sum().sort_index()
        # the outage: the last run of (near) zero power before the close, as the telemetry shows it
        near = s[(s.index >= pd.Timestamp(at) - pd.Timedelta(hours=6)) & (s.index <= pd.Timestamp(at) + pd.Timedelta(minutes=10))]
        if near.empty:
            continue
        level_ref = float(near.abs().max())
        zero = near.abs() <= 0.02 * max(level_ref, 1e-9)
        if not zero.any():
            continue
        last_zero = zero[zero].index.max()
        # walk back over the zero run to its start
        run = zero.loc[:last_zero]
        starts = run[~run].index
        off_start = run[run.index > starts.max()].index.min() if len(starts) else run.index.min()
        pre = s[(s.index >= off_start - pd.Timedelta(minutes=15)) & (s.index < off_start)]
        if len(pre) < 5 or pre.mean() <= 0:
            continue
        level = float(pre.mean())
        post = s[s.index > last_zero]
        back = post[post > 0.05 * level]
        if back.empty:
            continue
        t_r = back.index.min()
        curve = post[(post.index >= t_r) & (post.index < t_r + pd.Timedelta(minutes=after_min))]
        minutes = ((curve.index - t_r).total_seconds() / 60.0)
        per_min = pd.Series(curve.to_numpy() / level, index=np.floor(minutes)).groupby(level=0).mean()
        off = (t_r - off_start).total_seconds() / 60.0
        for m, ratio in per_min.items():
            rows.append({"block": int(block), "restored_at": t_r, "off_min": round(off, 2), "minute": float(m),
                         "ratio": float(ratio)})
    return pd.DataFrame(rows, columns=["block", "restored_at", "off_min", "minute", "ratio"])


def fit(curves: pd.DataFrame, now: datetime | None = None) -> tuple[Calibration, pd.DataFrame]:
    """The calibration from ``pickup_curves``, and one row per event (block, restored_at, off_min, peak)."""
    ev = curves[curves.ratio > 1.02].copy()
    per = pd.DataFrame(columns=["block", "restored_at", "off_min", "peak", "points"])
    cal = default()
    if ev.empty:
        return cal, per
    ev["y"] = np.log(ev.ratio - 1.0)
    keys = list(ev.groupby(["block", "restored_at"]).groups)
    if len(ev) < 3:
        return cal, per
    # y = a_e - t / tau: one intercept per event, a common slope
    X = np.zeros((len(ev), len(keys) + 1))
    kpos = {k: i for i, k in enumerate(keys)}
    for row, k in enumerate(zip(ev.block, ev.restored_at)):
        X[row, kpos[k]] = 1.0
    X[:, -1] = ev.minute.to_numpy()
    coef, *_ = np.linalg.lstsq(X, ev.y.to_numpy(), rcond=None)
    slope = coef[-1]
    offs = ev.groupby(["block", "restored_at"]).off_min.first()
    pts = ev.groupby(["block", "restored_at"]).size()
    per = pd.DataFrame([{"block": k[0], "restored_at": k[1], "off_min": float(offs[k]), "peak": 1.0 + float(np.exp(coef[i])),
                         "points": int(pts[k])} for i, k in enumerate(keys)])
    long = per[(per.off_min >= MIN_OFF_MIN) & (per.points >= 3)]
    if len(long) >= MIN_EVENTS and slope < 0:
        # the 90th percentile, not the median: the peak grows with the outage's length, and a stage sized
        # on a typical outage would be too small after a long one
        cal = Calibration(factor=round(float(np.clip(long.peak.quantile(0.9), 1.0, 3.0)), 3),
                          decay_min=round(float(np.clip(-1.0 / slope, 1.0, 120.0)), 2), events=len(long),
                          basis=f"fitted on {len(long)} restorations of outages >= {MIN_OFF_MIN:g} min from the "
                                "restored blocks' own telemetry",
                          computed_at=str(now or ""))
    return cal, per


def restorations_from_records(records: list[dict]) -> list[tuple[int, datetime]]:
    """(block, when) of every block a restoration record brought back."""
    out = []
    for r in records:
        at = pd.Timestamp(r["created_at"]).tz_localize(None) if pd.Timestamp(r["created_at"]).tzinfo else \
            pd.Timestamp(r["created_at"])
        for b in r["body"].get("restored", []) or []:
            out.append((int(b), at.to_pydatetime()))
    return out


def path(home: Path) -> Path:
    return Path(home) / "load" / "clpu.json"


def write(home: Path, cal: Calibration) -> None:
    p = path(home)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json()))
    tmp.replace(p)


def read(home: Path) -> Calibration:
    """The calibration in force: the file when it holds a fitted one, else the literature's."""
    try:
        d = json.loads(path(home).read_text())
        return Calibration(**{k: d[k] for k in ("factor", "decay_min", "events", "basis", "computed_at")})
    except (OSError, ValueError, KeyError, TypeError):
        return default()


__all__ = ["Calibration", "default", "fit", "pickup_curves", "read", "restorations_from_records", "write"]
