"""The plan's inputs from the stores, pure or read-only: the newest forecasts issued by a time, the
forecast frames on the plan's steps (with persistence and the nowcast where data is missing or the
measurement departs), the network with an estimated state's injections, and the VPP envelopes."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

HORIZON = timedelta(hours=24)
STEP = timedelta(minutes=5)
#: hours over which the measured-to-forecast ratio of renewable output fades back to the forecast
NOWCAST_HOURS = 2.0


def state_at(con, at: datetime | None = None, max_age: timedelta = timedelta(minutes=10),
             contingencies: int = 10) -> dict | None:
    """The newest converged estimated state in ``con``'s grid tables (at or before ``at``, at most
    ``max_age`` old, when ``at`` is given): snapshot time, injections, switch states, and the
    ``contingencies`` worst N-1 cases of the newest screening. None when there is none yet."""
    import duckdb

    try:
        if at is None:
            row = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary WHERE converged").fetchone()
        else:
            row = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary WHERE converged AND snapshot_ts <= ? "
                              "AND snapshot_ts > ?", [at, at - max_age]).fetchone()
        if not row or row[0] is None:
            return None
        ts = row[0]
        inj = con.execute("SELECT element_type, element_id, p_mw, q_mvar FROM grid.state_injection WHERE snapshot_ts = ?",
                          [ts]).df()
        sw = con.execute("SELECT switch_id, closed FROM grid.switch_states WHERE snapshot_ts = ?", [ts]).df()
        n1 = con.execute("SELECT contingency FROM grid.contingencies WHERE snapshot_ts = (SELECT max(snapshot_ts) FROM "
                         "grid.contingencies WHERE snapshot_ts <= ?) ORDER BY rank LIMIT ?", [ts, contingencies]).df()
    except duckdb.CatalogException:
        return None
    return {"ts": ts, "injections": inj, "switches": sw.set_index("switch_id").closed.astype(bool),
            "contingencies": [c for c in map(parse_case, n1.contingency) if c]}


def generation_since(con, after: datetime | None, limit: int = 4) -> list[tuple[datetime, pd.Series]]:
    """(snapshot time, estimated sgen p_mw by element id) of the converged snapshots after ``after``,
    oldest first, at most the ``limit`` newest of them (just the newest when ``after`` is None)."""
    import duckdb

    try:
        if after is None:
            rows = con.execute("SELECT max(snapshot_ts) FROM grid.state_summary WHERE converged").fetchall()
        else:
            rows = con.execute("SELECT snapshot_ts FROM grid.state_summary WHERE converged AND snapshot_ts > ? "
                               "ORDER BY snapshot_ts DESC LIMIT ?", [after, limit]).fetchall()
        stamps = sorted(r[0] for r in rows if r[0] is not None)
        if not stamps:
            return []
        df = con.execute("SELECT snapshot_ts, element_id, p_mw FROM grid.state_injection WHERE element_type = 'sgen' "
                         "AND snapshot_ts >= ? AND snapshot_ts <= ?", [stamps[0], stamps[-1]]).df()
    except duckdb.CatalogException:
        return []
    by = {ts: g.set_index("element_id").p_mw for ts, g in df.groupby("snapshot_ts")}
    return [(ts, by.get(pd.Timestamp(ts), pd.Series(dtype=float))) for ts in stamps]


def estimated_net(net, st: dict):
    """A copy of the network model with the estimated injections and switch states of snapshot ``st``
    (``{"injections": element_type, element_id, p_mw, q_mvar; "switches": Series}``)."""
    net = copy.deepcopy(net)
    inj = st["injections"]
    for table in ("load", "sgen", "storage"):
        part = inj[inj.element_type == table].set_index("element_id")
        if len(part) and table in net and len(net[table]):
            idx = net[table].index.intersection(part.index)
            net[table].loc[idx, "p_mw"] = part.p_mw.reindex(idx).to_numpy()
            net[table].loc[idx, "q_mvar"] = part.q_mvar.reindex(idx).to_numpy()
            if "scaling" in net[table]:
                net[table].loc[idx, "scaling"] = 1.0
    sw = st["switches"]
    idx = net.switch.index.intersection(sw.index)
    net.switch.loc[idx, "closed"] = sw.reindex(idx).to_numpy()
    return net


def without_planned_batteries(net, storage_index) -> object:
    """``net`` with the storage elements ``storage_index`` at 0 MW / 0 Mvar (a copy when any was not):
    the no-action state the plan's limit rows start from, since the plan decides those batteries' power."""
    idx = net.storage.index.intersection(pd.Index(storage_index)) if len(net.storage) else pd.Index([])
    if not len(idx):
        return net
    p = net.storage.loc[idx, "p_mw"].to_numpy(float)
    q = net.storage.loc[idx, "q_mvar"].to_numpy(float) if "q_mvar" in net.storage else np.zeros(len(idx))
    if not (np.abs(p).max(initial=0) > 0 or np.abs(q).max(initial=0) > 0):
        return net
    net = copy.deepcopy(net)
    net.storage.loc[idx, "p_mw"] = 0.0
    if "q_mvar" in net.storage:
        net.storage.loc[idx, "q_mvar"] = 0.0
    return net


def parse_case(text: str) -> tuple[str, int] | None:
    """'line 12' / 'trafo:0' -> ('line', 12); N-2 or unreadable cases are skipped (None)."""
    t = str(text).replace(":", " ").split()
    if len(t) == 2 and t[1].isdigit():
        return (t[0], int(t[1]))
    return None


def read_forecasts(con, now: datetime) -> dict:
    """The newest demand (system) and generation (per kind) forecasts issued at or before ``now``
    (within a day), with their issue times and model versions, and the ramp events ahead."""
    import duckdb

    since = now - timedelta(days=1)
    out = {"demand": None, "generation": {}, "ramps": 0, "ref": {}}
    try:
        d = con.execute("""SELECT issue_time, valid_time, p10, p50, p90, model, model_version FROM forecast.demand
                           WHERE series = 'system' AND issue_time = (SELECT max(issue_time) FROM forecast.demand
                           WHERE issue_time <= ? AND issue_time > ?)""", [now, since]).df()
        if len(d):
            out["demand"] = d
            out["ref"]["demand"] = {"issue_time": str(d.issue_time.iloc[0]), "model": str(d.model.iloc[0]),
                                    "model_version": str(d.model_version.iloc[0])}
    except duckdb.CatalogException:
        pass
    try:
        g = con.execute("""SELECT issue_time, kind, valid_time, capacity_mw, p10, p50, p90, model FROM forecast.generation
                           WHERE issue_time = (SELECT max(issue_time) FROM forecast.generation
                           WHERE issue_time <= ? AND issue_time > ?)""", [now, since]).df()
        for kind, part in g.groupby("kind"):
            out["generation"][kind] = part.reset_index(drop=True)
        if len(g):
            out["ref"]["generation"] = {"issue_time": str(g.issue_time.iloc[0]), "model": str(g.model.iloc[0])}
            r = con.execute("""SELECT count(*) FROM forecast.ramps WHERE issue_time = ? AND start >= ?
                               AND start < ?""", [g.issue_time.iloc[0], now, now + HORIZON]).fetchone()
            out["ramps"] = int(r[0]) if r else 0
    except duckdb.CatalogException:
        pass
    return out


def _day_before(df: pd.DataFrame) -> pd.DataFrame:
    """Steps past a forecast's end filled with the same time of the day before (a plan longer than the
    forecast: the market bids' plan to the end of the delivery day), then by persistence."""
    for _ in range(3):
        if not df.isna().any().any():
            break
        df = df.fillna(df.shift(freq="1D").reindex(df.index))
    return df


def forecast_frames(fc: dict | None, times: pd.DatetimeIndex, st: dict | None, net, flags: list[str]):
    """(demand, renewables per kind, ramps, reference) on the plan's steps. Missing forecasts are filled
    by persistence of the estimated state (flagged); missing steps of a forecast likewise, except past
    its end, which repeat the day before (flagged)."""
    naive = times.tz_convert("UTC").tz_localize(None)
    step = (naive[1] - naive[0]) if len(naive) > 1 else STEP
    fc = fc or {}
    inj = st["injections"] if st else None

    def on_steps(f: pd.DataFrame) -> pd.DataFrame:
        # a coarser plan (the market bids' hourly plan) takes each step's mean of the forecast's steps
        f = f[~f.index.duplicated()]
        if step > STEP:
            f = f.groupby(pd.DatetimeIndex(f.index).floor(step)).mean()
        return f.reindex(naive)

    d = fc.get("demand")
    if d is not None and len(d):
        dd = on_steps(d.set_index("valid_time")[["p10", "p50", "p90"]].astype(float))
        if dd.p50.isna().any():
            flags.append(f"demand forecast covers {int(dd.p50.notna().sum())} of {len(naive)} steps: the rest by persistence")
        demand = _day_before(dd).ffill().bfill()
    else:
        demand = None
    if demand is None or demand.p50.isna().all():
        now_load = float(inj[inj.element_type == "load"].p_mw.sum()) if inj is not None else \
            float(pd.to_numeric(net.load.p_mw).sum())
        flags.append("no demand forecast: persistence of the estimated load, with a +-5 % band")
        demand = pd.DataFrame({"p50": now_load, "p10": 0.95 * now_load, "p90": 1.05 * now_load}, index=naive)
    renew = {}
    gens = fc.get("generation") or {}
    for kind in ("pv", "wind"):
        g = gens.get(kind)
        if g is not None and len(g):
            gg = g.set_index("valid_time")[["p10", "p50", "p90", "capacity_mw"]].astype(float)
            gg = _day_before(on_steps(gg)).ffill().bfill()
            renew[kind] = gg.reset_index(drop=True)
    # nowcast: the first hours follow what is measured now. The ratio of the estimated output to the
    # forecast for this step scales the forecast, fading back to the forecast over NOWCAST_HOURS (a
    # cloud front or a cut-out persists for a while; the forecast knows nothing of it yet)
    if inj is not None and renew:
        sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
        types = net.sgen.type.astype(str)
        masks = {"pv": types.str.startswith(("PV", "lv_RES")), "wind": types.str.startswith("Wind")}
        for kind, g in renew.items():
            now_mw = float(sg.reindex(net.sgen.index[masks[kind]]).fillna(0).sum())
            f0 = float(g.p50.iloc[0])
            cap = float(g.capacity_mw.max()) if "capacity_mw" in g else 0.0
            if f0 > 0.02 * max(cap, 1e-9):
                ratio = min(max(now_mw / f0, 0.0), 2.0)
                fade = np.clip(1.0 - np.arange(len(g)) * (step / timedelta(hours=1)) / NOWCAST_HOURS, 0.0, 1.0)
                k = 1.0 + (ratio - 1.0) * fade
                for q in ("p10", "p50", "p90"):
                    g[q] = g[q] * k
                if abs(ratio - 1.0) > 0.1:
                    flags.append(f"{kind}: measured {now_mw:.2f} MW against {f0:.2f} MW forecast now; "
                                 f"the next {NOWCAST_HOURS:g} h follow the measurement")
    if not gens:
        flags.append("no renewable forecast: persistence of the estimated output")
        if inj is not None and "curtailable" in net.sgen:
            sg = inj[inj.element_type == "sgen"].set_index("element_id").p_mw
            types = net.sgen.type.astype(str)
            for kind, m in (("pv", types.str.startswith(("PV", "lv_RES"))), ("wind", types.str.startswith("Wind"))):
                mw = float(sg.reindex(net.sgen.index[m]).fillna(0).sum())
                renew[kind] = pd.DataFrame({"p10": 0.7 * mw, "p50": mw, "p90": min(1.3 * mw, mw + 1),
                                            "capacity_mw": float(net.sgen.sn_mva[m].sum())}, index=range(len(naive)))
    return demand.reset_index(drop=True), renew, int(fc.get("ramps", 0)), fc.get("ref", {})


def vpp_envelopes(units: pd.DataFrame, out, times: pd.DatetimeIndex, bms: pd.DataFrame,
                  feeder_headroom: dict | None = None) -> pd.DataFrame:
    """Per VPP and step: the aggregate P range and energy bounds the members can give around the plan
    (each member's power limits, and its energy limits from its planned energy at that step), the
    members behind one feeder head sharing what that head can carry (``feeder_headroom``: feeder ->
    (MW more injection, MW more consumption), ``limits.feeder_headroom``). ``feeder_capped`` names the
    feeders whose head cut the range."""
    rows = []
    dt = out.x.dt_h
    naive = times.tz_convert("UTC").tz_localize(None)
    feeder_headroom = feeder_headroom or {}
    for vpp, idx in units.groupby("vpp").groups.items():
        if not vpp:
            continue
        j = np.asarray([units.index.get_loc(i) for i in idx])
        avail = units.available.to_numpy(bool)[j]
        e = out.energy[:-1, j]
        lo, hi = out.x.e_min[j], out.x.e_max[j]
        pmax = units.p_max_mw.to_numpy(float)[j] * avail
        eta_c, eta_d = units.eta_c.to_numpy(float)[j], units.eta_d.to_numpy(float)[j]
        p_dis = np.minimum(pmax[None, :], np.clip(e - lo[None, :], 0, None) * eta_d[None, :] / dt)
        p_ch = np.minimum(pmax[None, :], np.clip(hi[None, :] - e, 0, None) / (eta_c[None, :] * dt))
        feeder = units.feeder.astype(str).to_numpy()[j] if "feeder" in units else np.full(len(j), "")
        capped = np.full(len(times), "", dtype=object)
        for f, (up, down) in feeder_headroom.items():
            on = feeder == str(f)
            if not on.any():
                continue
            for arr, room in ((p_dis, up), (p_ch, down)):
                tot = arr[:, on].sum(axis=1)
                over = tot > room + 1e-9
                if over.any():
                    arr[np.ix_(over, np.flatnonzero(on))] *= (max(room, 0.0) / tot[over])[:, None]
                    capped[over] = [f"{c} {f}".strip() for c in capped[over]]
        for t in range(len(times)):
            rows.append({"vpp": vpp, "step_ts": naive[t], "step": t, "p_min_mw": -float(p_ch[t].sum()),
                         "p_max_mw": float(p_dis[t].sum()), "e_min_mwh": float(lo[avail].sum()),
                         "e_max_mwh": float(hi[avail].sum()), "e_planned_mwh": float(e[t][avail].sum()),
                         "members": int(avail.sum()), "feeder_capped": " ".join(sorted(set(capped[t].split())))})
    return pd.DataFrame(rows, columns=["vpp", "step_ts", "step", "p_min_mw", "p_max_mw", "e_min_mwh", "e_max_mwh",
                                       "e_planned_mwh", "members", "feeder_capped"])


__all__ = ["HORIZON", "NOWCAST_HOURS", "STEP", "estimated_net", "forecast_frames", "parse_case", "read_forecasts",
           "state_at", "vpp_envelopes", "without_planned_batteries"]


def active_import_limit(records: list[dict], now: datetime) -> dict | None:
    """The import limit instruction that is in force at ``now`` or announced for later: the newest
    ``import_limit`` record (``gridpipeline load import-limit``, e.g. a transmission operator's
    instruction) unless it is a release or has ended. ``{"mw", "start", "until", "id"}`` (naive UTC;
    ``until`` may be None: until released)."""
    latest = None
    for r in records:
        if r.get("kind") == "import_limit":
            latest = r  # ledger order: the newest wins
    if latest is None or latest["body"].get("released"):
        return None
    b = latest["body"]
    start = datetime.fromisoformat(str(b.get("start") or latest["created_at"]))
    until = datetime.fromisoformat(str(b["until"])) if b.get("until") else None
    if until is not None and now >= until:
        return None
    return {"mw": float(b["mw"]), "start": start, "until": until, "id": str(latest["id"])}


def import_limit_steps(times: pd.DatetimeIndex, base_mw: float, instruction: dict | None) -> np.ndarray:
    """(T,) MW the grid may import at each plan step: ``base_mw``, lowered by ``instruction`` over the
    steps inside its ``[start, until)`` (a step counts when any part of it is inside)."""
    out = np.full(len(times), float(base_mw))
    if instruction is None:
        return out
    t = pd.DatetimeIndex(times).tz_localize(None) if pd.DatetimeIndex(times).tz is not None else pd.DatetimeIndex(times)
    step = (t[1] - t[0]) if len(t) > 1 else pd.Timedelta(minutes=5)
    inside = (t + step > pd.Timestamp(instruction["start"]))
    if instruction.get("until") is not None:
        inside &= t < pd.Timestamp(instruction["until"])
    out[inside] = np.minimum(out[inside], float(instruction["mw"]))
    return out
