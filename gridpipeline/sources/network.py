"""The network model as a utility has it: a pandapower JSON export of its GIS, plus the zones the
operator works in (derived from the network's topology, see :func:`gridpipeline.common.zones.compute_zones`).

Loaded once per file version and process: the 30-second loop and the forecasts ask for it often.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class NetworkModelMissing(FileNotFoundError):
    """The network export is not where the settings say; the message says how to get it."""


@dataclass(frozen=True)
class NetworkModel:
    """A network export: the pandapower net, the zone of every bus, and where it came from."""

    net: object
    zones: pd.Series
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.parent.name

    def load_zones(self) -> np.ndarray:
        """Zone of every load, in ``net.load`` row order ('unzoned' where the bus has none)."""
        return self.zones.reindex(self.net.load.bus).fillna("unzoned").astype(str).to_numpy()

    def nominal_load(self) -> pd.DataFrame:
        """Nominal P/Q of every load (its rated value times its scaling), with its zone."""
        ld = self.net.load
        scaling = ld["scaling"].astype(float).fillna(1.0) if "scaling" in ld else 1.0
        return pd.DataFrame({"element_id": ld.index.to_numpy(), "zone": self.load_zones(),
                             "p_mw": (ld.p_mw.astype(float).fillna(0.0) * scaling).to_numpy(),
                             "q_mvar": (ld.q_mvar.astype(float).fillna(0.0) * scaling).to_numpy()})

    def nominal_zone_demand(self) -> pd.Series:
        """Nominal demand (MW) per zone with loads, plus ``system`` (their sum)."""
        per_zone = self.nominal_load().groupby("zone").p_mw.sum()
        return pd.concat([per_zone, pd.Series({"system": float(per_zone.sum())})])

    def capacity_mw(self, types: tuple[str, ...]) -> float:
        """Installed rating (sn_mva, else p_mw) of in-service static generators whose type starts with ``types``."""
        sg = self.net.sgen[self.net.sgen.in_service.astype(bool)]
        sel = sg.type.astype(str).map(lambda t: any(t.startswith(x) for x in types))
        rating = sg.sn_mva.where(sg.sn_mva > 0, sg.p_mw) if "sn_mva" in sg else sg.p_mw
        return float(rating[sel].sum())


_cache: dict[tuple[str, int], NetworkModel] = {}
_lock = threading.Lock()


def load_network_model(path: Path | str) -> NetworkModel:
    """The network export at ``path`` (cached while the file is unchanged)."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise NetworkModelMissing(
            f"no network model at {path}: set GRIDPIPELINE_NETWORK_PATH to your network's pandapower JSON, or for "
            "the simulated scale world run `uv run gridpipeline simulate --world scale` once (it publishes the network)"
        ) from None
    import pandapower as pp

    from gridpipeline.common.zones import compute_zones

    key = (str(path), stat.st_mtime_ns)
    with _lock:
        if key not in _cache:
            raw = path.read_bytes()
            net = pp.from_json_string(raw.decode())
            _cache.clear()
            _cache[key] = NetworkModel(net=net, zones=compute_zones(net), path=path,
                                       sha256=hashlib.sha256(raw).hexdigest())
        return _cache[key]
