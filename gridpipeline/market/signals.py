"""Nodal prices and the published tariff for a dispatch plan's horizon.

The plan knows the system: demand and renewables per step (forecasts), the batteries' and curtailment's
planned MW, and the energy price per step. The prices need it per bus. :func:`horizon_bus_loads` takes
the spatial pattern from the current estimated state (each bus's share of the estimated load, and of
the estimated output of each generator kind; the ratings where nothing is produced now), scales it by
the forecasts, and puts the planned battery and curtailment MW at their buses. :func:`signals_for_plan`
prices that with :func:`market.dlmp.solve_dlmp` (loss factors around the estimated state) and
publishes a tariff per zone (feeder) under a :class:`market.tariff.TariffPolicy`.

With ``curtail_value``, the renewables' output left after the plan's curtailment is offered to the
price model as downward flexibility at that value (EUR/MWh, the dispatch's value of curtailed energy):
a line the plan's export would overload is priced by the marginal curtailment behind it, about
``-curtail_value`` there, and prices below ``-curtail_value`` curtail on their own. No upward
flexibility is offered (the customers' offers are bought on the local flexibility market, not priced
here): a limit the plan's load would break is priced at the penalty ``voll``, which the tariff's cap
then bounds, and the record names the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.market.dlmp import DlmpResult, RadialFeeder, solve_dlmp
from gridpipeline.market.network import bus_injections, loss_factors
from gridpipeline.market.tariff import TariffChoice, TariffPolicy, choose_tariff, publish_tariff, zone_prices


def _kind(net) -> np.ndarray:
    t = net.sgen["type"].astype(str) if "type" in net.sgen else pd.Series("", index=net.sgen.index)
    return np.where(t.str.startswith("Wind").to_numpy(), "wind", "pv")


def horizon_bus_generation(est_net, bus_map: pd.Series, n: int, renewables: dict[str, np.ndarray], T: int) -> np.ndarray:
    """(T, n) MW the renewables produce per feeder bus over the horizon, before any curtailment: each
    kind's forecast spread over its generators by their estimated output now (their ratings where
    nothing is produced now)."""
    out = np.zeros((T, n))
    sg = est_net.sgen[est_net.sgen.in_service]
    kinds = _kind(est_net)[est_net.sgen.in_service.to_numpy()]
    kb = bus_map.reindex(sg.bus).to_numpy()
    for kind, mw in renewables.items():
        m = (kinds == kind) & np.isfinite(kb)
        if not m.any():
            continue
        now = (sg.p_mw.to_numpy(float) * (sg["scaling"].fillna(1.0).to_numpy() if "scaling" in sg else 1.0))[m]
        weight = now if now.sum() > 1e-6 else sg.get("sn_mva", sg.p_mw).fillna(0.0).to_numpy(float)[m]
        if weight.sum() <= 1e-12:
            weight = np.ones(m.sum())
        g = np.zeros(n)
        np.add.at(g, kb[m].astype(int), weight / weight.sum())
        out += np.outer(np.asarray(mw, float)[:T], g)
    return out


def at_buses(bus_map: pd.Series, n: int, buses, mw, T: int) -> np.ndarray:
    """(T, n): the units' MW ``mw`` (T, units) summed on the feeder buses of their ``buses`` (a unit off
    the feeder is left out); zeros when either is None."""
    out = np.zeros((T, n))
    if buses is None or mw is None or not len(buses):
        return out
    k = bus_map.reindex(buses).to_numpy()
    for j in np.flatnonzero(np.isfinite(k)):
        out[:, int(k[j])] += np.asarray(mw, float)[:T, j]
    return out


def horizon_bus_loads(est_net, bus_map: pd.Series, n: int, demand_p50: np.ndarray, renewables: dict[str, np.ndarray],
                      battery_bus: np.ndarray | None = None, battery_mw: np.ndarray | None = None,
                      gen_bus: np.ndarray | None = None, curtailed_mw: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(p, q) (T, n) net load per feeder bus over the horizon (see the module docstring).
    ``battery_mw`` (T, B): + discharge; ``curtailed_mw`` (T, G)."""
    demand = np.asarray(demand_p50, float)
    T = len(demand)
    loads = est_net.load[est_net.load.in_service]
    k = bus_map.reindex(loads.bus).to_numpy()
    ok = np.isfinite(k)
    sc = loads["scaling"].fillna(1.0).to_numpy() if "scaling" in loads else np.ones(len(loads))
    lp, lq = np.zeros(n), np.zeros(n)
    np.add.at(lp, k[ok].astype(int), (loads.p_mw.to_numpy(float) * sc)[ok])
    np.add.at(lq, k[ok].astype(int), (loads.q_mvar.fillna(0.0).to_numpy(float) * sc)[ok])
    total = lp.sum()
    share = lp / total if abs(total) > 1e-9 else np.full(n, 1.0 / n)
    qp = np.divide(lq, lp, out=np.zeros(n), where=np.abs(lp) > 1e-9)  # each bus's reactive ratio
    p = np.outer(demand, share)
    q = p * qp[None, :]
    p -= horizon_bus_generation(est_net, bus_map, n, renewables, T)
    p -= at_buses(bus_map, n, battery_bus, battery_mw, T)
    p += at_buses(bus_map, n, gen_bus, curtailed_mw, T)
    return p, q


@dataclass
class PlanSignals:
    """The horizon's nodal prices and the published tariff (``zones`` x steps), with the notes."""

    dlmp: DlmpResult
    zones: np.ndarray
    zone_price: np.ndarray
    tariff: np.ndarray
    tariff_notes: list[dict]
    loss_factor: np.ndarray
    #: the response-aware choice (:func:`market.tariff.choose_tariff`), when the tariff was chosen with it
    choice: TariffChoice | None = None
    #: (T, N) the plan's net load per feeder bus, MW and Mvar (what the prices were computed on)
    net_load: np.ndarray | None = None
    net_q: np.ndarray | None = None
    #: (T,) the responsive load per step relative to now the tariff was chosen with (None: constant)
    response_shape: np.ndarray | None = None

    def summary(self, feeder: RadialFeeder, times) -> dict:
        d = self.dlmp
        spread = d.price.max(axis=1) - d.price.min(axis=1)
        worst = int(np.argmax(spread))
        return {"steps": int(d.price.shape[0]), "buses": int(feeder.n),
                "price_range_eur_mwh": [round(float(d.price.min()), 2), round(float(d.price.max()), 2)],
                "largest_spread_eur_mwh": round(float(spread[worst]), 2), "largest_spread_at": str(times[worst]),
                "binding": d.binding[:20], "binding_count": len(d.binding),
                "components_at_largest_spread": {
                    c: round(float(np.abs(getattr(d, c)[worst]).max()), 2) for c in ("losses", "congestion", "voltage")},
                "tariff_bounds_bit": len(self.tariff_notes), "tariff_notes": self.tariff_notes[:20],
                "unserved_mw_max": round(float(d.unserved_mw.sum(axis=1).max()), 4),
                "price_model_curtails_mw_max": round(float(0.0 if d.down_mw is None else d.down_mw.sum(axis=1).max()), 4),
                "tariff_chosen_with_response": None if self.choice is None else self.choice.summary}


def signals_for_plan(feeder: RadialFeeder, bus_map: pd.Series, est_net, zone_of_feeder_bus: np.ndarray,
                     demand_p50, renewables, price, policy: TariffPolicy, last_tariff: np.ndarray | None = None,
                     voll: float = 10_000.0, response_weight: dict | None = None, curtail_value: float | None = None,
                     response_shape: np.ndarray | None = None, import_margin: np.ndarray | None = None,
                     import_scenarios: np.ndarray | None = None, **bus_kw) -> PlanSignals:
    """Prices and tariff for one plan (see the module docstring). With ``response_weight`` (zone -> MW
    its responsive customers move per unit of relative price, :func:`market.response.response_weight`),
    the tariff is chosen with the predicted response (:func:`market.tariff.choose_tariff`: the energy
    it moves at the zones' prices and the horizon's peak import); without, it is the zones' prices
    within the policy's bounds. ``response_shape`` (T,): the responsive load per step relative to now
    (:func:`market.response.predicted_response`; None: constant). ``import_margin`` (T,): how far the
    import may come out above its forecast, ``import_scenarios`` (S, T) equally likely deviations from it
    (:func:`market.tariff.choose_tariff`: the peak valued at its mean over them; the margin when None).
    ``curtail_value``: see the module docstring."""
    p, q = horizon_bus_loads(est_net, bus_map, feeder.n, demand_p50, renewables, **bus_kw)
    down = down_cost = None
    if curtail_value is not None:
        down = np.clip(horizon_bus_generation(est_net, bus_map, feeder.n, renewables, len(p))
                       - at_buses(bus_map, feeder.n, bus_kw.get("gen_bus"), bus_kw.get("curtailed_mw"), len(p)), 0.0, None)
        down_cost = np.full(feeder.n, float(curtail_value))
    p0, q0 = bus_injections(est_net, bus_map, feeder.n)
    vm = None
    if "res_bus" in est_net and len(getattr(est_net, "res_bus", [])) and "vm_pu" in est_net.res_bus:
        vm = np.ones(feeder.n)
        for b, k in bus_map.dropna().items():
            if b in est_net.res_bus.index and np.isfinite(est_net.res_bus.vm_pu.get(b, np.nan)):
                vm[int(k)] = float(est_net.res_bus.vm_pu[b])
    lf = loss_factors(feeder, p0, q0, vm)
    r = solve_dlmp(feeder, p, np.asarray(price, float), load_mvar=q, loss_factor=lf, voll=voll, penalty=voll,
                   down_mw=down, down_cost=down_cost)
    weight = np.clip(p, 0.0, None)
    zones, zp = zone_prices(r.price, zone_of_feeder_bus, weight)
    tariff, notes = publish_tariff(zp, policy, last_tariff)
    choice = None
    if response_weight:
        w = np.array([float(response_weight.get(str(z), 0.0)) for z in zones])
        if np.abs(w).sum() > 0:
            if response_shape is not None:  # the responsive load follows the forecast: the customers' weighted mean
                w = np.outer(np.clip(np.asarray(response_shape, float)[:len(zp)], 0.0, None), w)
            choice = choose_tariff(zp, w, p.sum(axis=1), policy, last=last_tariff, import_margin=import_margin,
                                   import_scenarios=import_scenarios)
            if choice.summary["status"] == "optimal":
                # the clipped prices' notes describe a tariff not published: the LP's bounds hold by construction
                tariff, notes = choice.tariff, []
    for nrow in notes:
        nrow["zone"] = str(zones[nrow["zone"]])
    return PlanSignals(r, zones, zp, tariff, notes, lf, choice, p, q, response_shape)
