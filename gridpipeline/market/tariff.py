"""Price signals: nodal prices turned into a tariff per zone (or feeder) and step that customers can act on.

A customer sees one price for its zone: the load-weighted mean of its buses' DLMPs
(:func:`zone_prices`). The policy then bounds what is published (:func:`publish_tariff`): a cap and a
floor, and the largest change per hour, so that a signal never jumps faster than customers can follow.
Every bound that bites is reported with the step, the zone and by how much, because the tariff is a
decision and its record must say where it departs from the prices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TariffPolicy:
    """EUR/MWh: ``cap`` and ``floor`` of the published tariff, ``max_change_per_hour`` between steps of
    ``step_minutes``."""

    cap: float = 500.0
    floor: float = -100.0
    max_change_per_hour: float = 100.0
    step_minutes: float = 5.0

    def __post_init__(self):
        if self.floor > self.cap:
            raise ValueError(f"tariff policy: floor {self.floor} above cap {self.cap}")
        if self.max_change_per_hour <= 0:
            raise ValueError("tariff policy: max_change_per_hour must be positive")


def zone_prices(dlmp: np.ndarray, zone_of_bus: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(zones (Z,), prices (T, Z)): the load-weighted mean DLMP of each zone's buses (the plain mean where
    a zone has no load at a step)."""
    dlmp = np.atleast_2d(np.asarray(dlmp, float))
    T, N = dlmp.shape
    zone_of_bus = np.asarray(zone_of_bus)
    zones = np.unique(zone_of_bus)
    w = np.ones((T, N)) if weight is None else np.clip(np.atleast_2d(np.asarray(weight, float)), 0.0, None)
    out = np.zeros((T, len(zones)))
    for k, z in enumerate(zones):
        m = zone_of_bus == z
        ws = w[:, m].sum(axis=1)
        plain = dlmp[:, m].mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(ws > 1e-12, (dlmp[:, m] * w[:, m]).sum(axis=1) / np.where(ws > 1e-12, ws, 1.0), plain)
    return zones, out


def publish_tariff(prices: np.ndarray, policy: TariffPolicy, last: np.ndarray | None = None
                   ) -> tuple[np.ndarray, list[dict]]:
    """(tariff (T, Z), bounds that bit): each step's zone price clipped to [floor, cap], then moved from
    the step before (``last`` (Z,): the tariff in force; none: the first step is free) by at most
    ``max_change_per_hour x step``. Each adjustment is a row: step, zone index, rule, price, published."""
    p = np.atleast_2d(np.asarray(prices, float))
    T, Z = p.shape
    ramp = policy.max_change_per_hour * policy.step_minutes / 60.0
    out = np.zeros((T, Z))
    notes: list[dict] = []
    prev = None if last is None else np.asarray(last, float).copy()
    for t in range(T):
        want = p[t].copy()
        nan = ~np.isfinite(want)
        if nan.any():  # no price: hold the tariff in force (or the floor at the very start)
            want[nan] = prev[nan] if prev is not None else policy.floor
            for z in np.flatnonzero(nan):
                notes.append({"step": t, "zone": int(z), "rule": "no price: held", "price": None,
                              "published": float(want[z])})
        clipped = np.clip(want, policy.floor, policy.cap)
        for z in np.flatnonzero(np.abs(clipped - want) > 1e-9):
            notes.append({"step": t, "zone": int(z), "rule": "cap" if want[z] > policy.cap else "floor",
                          "price": float(want[z]), "published": float(clipped[z])})
        pub = clipped if prev is None else np.clip(clipped, prev - ramp, prev + ramp)
        for z in np.flatnonzero(np.abs(pub - clipped) > 1e-9):
            notes.append({"step": t, "zone": int(z), "rule": "largest change per hour", "price": float(clipped[z]),
                          "published": float(pub[z])})
        out[t] = pub
        prev = pub
    return out, notes
