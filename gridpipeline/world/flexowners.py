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
