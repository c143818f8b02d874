"""Cold-load pickup in the world: a load re-energised after an outage draws more than before, because the
thermostatic appliances behind it (heating, cooling, refrigeration, water heaters) all switch on at once
and have lost their diversity.

The model (the exponential form of the cold-load pickup literature, e.g. Ucak and Pahwa, IEEE Trans.
Power Delivery 9(2), 1994; Kumar et al., IEEE Trans. Power Systems 2008): a load re-energised at
``t_r`` after ``d`` minutes off draws

    p(t) = p_normal(t) * (1 + (peak(d) - 1) * exp(-(t - t_r) / tau)),
    peak(d) = 1 + (PEAK_MAX - 1) * (1 - exp(-d / D_SATURATE))

with ``PEAK_MAX`` 2.0 (a long outage: all diversity lost), ``D_SATURATE`` 30 minutes and ``tau`` 15
minutes (the excess is 1/e after 15 minutes, under 15 % after 30). Outages shorter than a minute
cause none. The pipeline never reads these numbers: it calibrates its own from the telemetry of the
blocks it restored (``load.clpu``).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

PEAK_MAX = 2.0
D_SATURATE_MIN = 30.0
TAU_MIN = 15.0
MIN_OUTAGE_MIN = 1.0


def peak(off_min: float | np.ndarray) -> np.ndarray:
    d = np.asarray(off_min, float)
    return np.where(d >= MIN_OUTAGE_MIN, 1.0 + (PEAK_MAX - 1.0) * (1.0 - np.exp(-d / D_SATURATE_MIN)), 1.0)


class ColdLoadPickup:
    """Per load, the re-energisations the switch events cause, and the multiplier at any instant."""

    def __init__(self, net):
        import threading

        self.net = net
        self._key = None
        self._restores: list[tuple[np.ndarray, datetime, np.ndarray]] = []  # (loads, at, off minutes)
        self._done: list = []       # the events the timeline covers
        self._state = None          # (switch states, energized loads, off since) after them
        self._lock = threading.Lock()  # the simulator's and the outstation's threads both ask

    def _timeline(self, events: list[tuple[datetime, int, bool]]) -> list:
        """The re-energisations of ``events`` (built aside and swapped in whole, with its key, so a reader
        never sees half of it). Switch events only grow at the end, so new ones extend the timeline from
        where it stood: a rebuild from the start is a connectivity search per event ever recorded, which
        after a few hundred events took the outstation's 0.1-s loop (and the breakers' check-back reports
        behind it) over a second."""
        from gridpipeline.world.outstation import energized_loads

        events = sorted(events)
        key = (len(events), events[-1] if events else None)
        with self._lock:
            if key == self._key:
                return self._restores
            done, state = self._done, self._state
        if state is not None and len(done) <= len(events) and events[:len(done)] == done:
            closed, live, off_since = dict(state[0]), state[1].copy(), state[2].copy()
            restores, todo = list(self._restores), events[len(done):]
        else:
            closed = {int(s): bool(c) for s, c in self.net.switch.closed.items()}
            live = energized_loads(self.net, closed)
            off_since = np.full(len(live), np.datetime64("NaT"), dtype="datetime64[us]")
            restores, todo = [], events
        for when, sw, c in todo:
            if closed.get(int(sw)) == bool(c):
                continue  # a repeated command or report: nothing moved
            closed[int(sw)] = bool(c)
            now_live = energized_loads(self.net, closed)
            t = np.datetime64(pd.Timestamp(when).to_datetime64(), "us")
            went_off = live & ~now_live
            off_since[went_off] = t
            back = ~live & now_live
            if back.any():
                mins = np.where(np.isnat(off_since[back]), 0.0,
                                (t - off_since[back]) / np.timedelta64(1, "m"))
                restores.append((np.flatnonzero(back), pd.Timestamp(when).to_pydatetime(), mins))
            live = now_live
        with self._lock:
            self._key, self._restores = key, restores
            self._done, self._state = events, (closed, live, off_since)
        return restores

    def factor(self, times: pd.DatetimeIndex, events: list[tuple[datetime, int, bool]]) -> np.ndarray | None:
        """(T, n_load) multipliers at ``times`` (UTC), or None when no restoration affects them."""
        if not events:
            return None
        restores = self._timeline(list(events))
        if not restores:
            return None
        naive = (times.tz_convert("UTC").tz_localize(None) if times.tz is not None else times).to_numpy()
        out = None
        for loads, at, mins in restores:
            dt = (naive - np.datetime64(at)) / np.timedelta64(1, "m")
            on = dt >= 0
            if not on.any() or (dt[on] > 8 * TAU_MIN).all():
                continue
            if out is None:
                out = np.ones((len(naive), len(self.net.load)))
            excess = (peak(mins) - 1.0)[None, :] * np.exp(-np.clip(dt, 0, None) / TAU_MIN)[:, None]
            # a later restoration of the same load: the larger of what is left of the earlier excess and
            # the new one (a short trip does not give the appliances their diversity back)
            out[np.ix_(on, loads)] = np.maximum(out[np.ix_(on, loads)], 1.0 + excess[on])
        return out


__all__ = ["ColdLoadPickup", "PEAK_MAX", "TAU_MIN", "peak"]
