"""The real-time cost model: what each 5-minute step cost, component by component.

Per step (EUR, positive = a cost to the operator):

* ``energy``: the energy bought at the market price. Without a market position it is the import less
  the losses, at the price; with one, the position at the price (the deviation is the imbalance);
* ``losses``: the network losses (from the state estimate) at the price, so that energy + losses is the
  whole bill for the import;
* ``degradation``: every battery's throughput at its degradation cost (EUR/MWh);
* ``curtailment``: curtailed renewable energy at its value (EUR/MWh: what it would have earned);
* ``demand_response``: the reduction delivered at the contracts' compensation;
* ``lost_load``: energy shed at the value of lost load;
* ``imbalance``: the deviation of the import from the market position at the imbalance price
  (``settlement.imbalance_prices``: short pays ``price + spread``, long is paid ``price - spread``).

:func:`cost_departures` compares a step's cost with what the plan expected and names the component that
moved most, for the check that warns when a step departs by more than a set share.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.market.settlement import imbalance_prices

COMPONENTS = ("energy", "losses", "degradation", "curtailment", "demand_response", "lost_load", "imbalance")


def step_costs(price, import_mw, losses_mw=None, battery_mw=None, degradation=None, curtailed_mw=None,
               curtail_value=None, dr_mw=None, dr_price=None, shed_mw=None, voll=None, position_mw=None,
               dt_h: float = 5 / 60) -> pd.DataFrame:
    """One row per step with a column per component and ``total`` (see the module docstring). Arrays are
    (T,) except ``battery_mw`` (T, B) with ``degradation`` (B,); a missing input costs nothing and is
    reported in ``missing`` (a string per row: the components that had no data)."""
    p = np.asarray(price, float)
    T = len(p)
    z = np.zeros(T)

    def arr(x, default=z):
        return default if x is None else np.broadcast_to(np.asarray(x, float), (T,)).astype(float)

    imp = arr(import_mw)
    loss = arr(losses_mw)
    out = {"losses": loss * p * dt_h}
    if position_mw is None:
        out["energy"] = (imp - loss) * p * dt_h
        out["imbalance"] = z.copy()
    else:
        pos = arr(position_mw)
        lo, hi = imbalance_prices(p)
        dev = imp - pos  # bought more than the position: short
        out["energy"] = (pos - loss) * p * dt_h
        out["imbalance"] = dev * np.where(dev > 0, hi, lo) * dt_h
    if battery_mw is not None:
        b = np.atleast_2d(np.asarray(battery_mw, float))
        deg = np.broadcast_to(np.asarray(degradation if degradation is not None else 0.0, float), (b.shape[1],))
        out["degradation"] = (np.abs(b) * deg[None, :]).sum(axis=1) * dt_h
    else:
        out["degradation"] = z.copy()
    out["curtailment"] = arr(curtailed_mw) * arr(curtail_value) * dt_h
    out["demand_response"] = arr(dr_mw) * arr(dr_price) * dt_h
    out["lost_load"] = arr(shed_mw) * arr(voll) * dt_h
    df = pd.DataFrame({c: out[c] for c in COMPONENTS})
    df["total"] = df.sum(axis=1)
    given = {"losses": losses_mw, "degradation": battery_mw, "curtailment": curtailed_mw,
             "demand_response": dr_mw, "lost_load": shed_mw, "imbalance": position_mw}
    df["missing"] = ",".join(k for k, v in given.items() if v is None)
    return df


def cost_departures(actual: pd.DataFrame, expected: pd.DataFrame, share: float = 0.2, floor_eur: float = 1.0
                    ) -> list[dict]:
    """The steps whose total departs from the expected by more than ``share`` of the expected (and more
    than ``floor_eur``, so that near-zero steps do not warn on cents), each with the component that
    moved most and by how much."""
    out = []
    for t in range(min(len(actual), len(expected))):
        a, e = float(actual.total.iloc[t]), float(expected.total.iloc[t])
        if abs(a - e) <= max(share * abs(e), floor_eur):
            continue
        diff = {c: float(actual[c].iloc[t] - expected[c].iloc[t]) for c in COMPONENTS}
        worst = max(diff, key=lambda c: abs(diff[c]))
        out.append({"step": t, "actual_eur": round(a, 2), "expected_eur": round(e, 2), "component": worst,
                    "component_change_eur": round(diff[worst], 2)})
    return out
