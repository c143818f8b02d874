"""The DER owners of the simulated field on the local flexibility market: their standing offers.

The way GOPACS or NODES work, owners of flexible assets post what they can do and at what price; the
operator buys from them when a line is congested. Here each owner posts, a day ahead, one offer per
asset and delivery day to the platform's file drop (``offers-YYYY-MM-DD.csv``, UTC days):

* every renewable generator (PV, wind) offers to **reduce its output** (direction ``down``, which
  relieves a line carrying export out of its area) up to its rating, at the feed-in it gives up plus its
  owner's premium: 60-110 EUR/MWh for PV, 50-100 for wind;
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


def standing_offers(net, load_class: dict[int, str], day, seed: int = 0) -> pd.DataFrame:
    """The owners' offers for delivery ``day`` (a date, UTC)."""
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
        rows.append({"owner": f"sgen-{i}", "bus": int(sg.bus[i]), "direction": "down", "mw": round(mw, 4),
                     "price_eur_mwh": round(lo + (hi - lo) * _u(seed, "gen", int(i), str(d.date())), 2)})
    for i in net.load.index:
        if load_class.get(int(i)) not in ("commercial", "industrial"):
            continue
        mw = 0.2 * float(net.load.p_mw[i])
        if mw < 0.005:
            continue
        rows.append({"owner": f"load-{i}", "bus": int(net.load.bus[i]), "direction": "up", "mw": round(mw, 4),
                     "price_eur_mwh": round(150.0 + 250.0 * _u(seed, "load", int(i), str(d.date())), 2)})
    out = pd.DataFrame(rows, columns=["owner", "bus", "direction", "mw", "price_eur_mwh"])
    out.insert(0, "offer_id", [f"{o}-{d:%Y%m%d}" for o in out.owner])
    out["valid_from"], out["valid_to"], out["divisible"] = d, d + pd.Timedelta(days=1), True
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
            standing_offers(self.world.net, self.load_class, d, self.seed).to_csv(tmp, index=False)
            tmp.rename(f)
            out.append(f)
        return out
