"""Distribution locational marginal prices (DLMPs) from a linearised optimal power flow (LinDistFlow).

A radial feeder, buses ``0..N-1`` with bus 0 the substation; bus ``j > 0`` hangs from ``parent[j]`` by a
line of resistance ``r[j]`` and reactance ``x[j]`` (per unit on ``base_mva``) with a rating ``s_max[j]``
(MVA). At each step the least-cost supply of every bus's net load is chosen: import at the substation
at the energy price, or local flexibility, within the lines' ratings and the voltage band. Flexibility
goes both ways:

* **upward** (``flex_mw`` at ``flex_cost`` EUR/MWh): injection more or consumption less (a generator
  turned up, a demand-response offer); it relieves a line carrying load into its subtree;
* **downward** (``down_mw`` at ``down_cost`` EUR/MWh): injection less or consumption more (renewables
  curtailed, at the value of the energy lost; a flexible load turned up); it relieves a line carrying
  export out of its subtree, and runs on its own where the energy price is below ``-down_cost``.

LinDistFlow (Baran and Wu's DistFlow without the loss terms): the active flow into bus j is the net load
of its subtree, ``P = L @ net`` with ``L[j, k] = 1`` when k is in j's subtree; the squared voltage falls
along the path, ``v = v0 - 2 (R @ p + X @ q) / base`` with ``R[i, j]`` the resistance the paths to i and
j share. Reactive power is the loads' (the price model does not steer it), so a rating ``s_max``
leaves ``sqrt(s_max^2 - Q^2)`` of active flow.

Plain LinDistFlow has no losses; they enter through loss sensitivity factors ``loss_factor[j]`` (the
change of the feeder's losses per MW more net load at j, from the current estimated state): a MW at j
costs ``(1 + loss_factor[j])`` MW at the substation.

The price at bus j is the dual of its balance, and splits exactly into

* **energy**: the substation's price;
* **losses**: the energy price times ``loss_factor[j]``;
* **congestion**: the rating duals of the lines on the path to j (a MW more at j flows through each):
  positive behind a line importing at its rating, negative behind one exporting at its rating (a MW
  more consumed there spares a MW of curtailment: the price behind it is ``-down_cost`` of the
  marginal curtailed unit);
* **voltage**: the voltage-band duals times ``-dv_i/dp_j = 2 R[i, j] / base``.

Batteries are not co-optimised here: their schedules come from the dispatch plan and arrive as part of
the net load (the issue allows it; the dispatch already prices them against the grid).

Every step is independent, so all steps are one vectorised LP (cvxpy, HiGHS). The balance cannot be
infeasible: unserved load is a slack at ``voll`` EUR/MWh (a price at that level says so), and so is a
rating or voltage limit no dispatch can keep (``penalty``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RadialFeeder:
    """A radial network (bus 0 the substation). ``r``/``x`` (N,) per unit on ``base_mva`` of the line from
    the parent (0 at bus 0); ``s_max`` (N,) MVA (inf: unmonitored)."""

    bus_ids: np.ndarray
    parent: np.ndarray
    r: np.ndarray
    x: np.ndarray
    s_max: np.ndarray
    base_mva: float = 1.0
    v0: float = 1.0  # the substation's voltage, per unit
    v_min: float = 0.95
    v_max: float = 1.05
    line_names: tuple[str, ...] = ()

    def __post_init__(self):
        if int(self.parent[0]) != -1 or (np.asarray(self.parent[1:]) < 0).any():
            raise ValueError("bus 0 must be the substation (parent -1) and every other bus must have a parent")
        for j, a in enumerate(self.parent):
            if j > 0 and a >= j:
                raise ValueError(f"bus {self.bus_ids[j]}: parents must come before their children (order the buses)")

    @property
    def n(self) -> int:
        return len(self.bus_ids)

    def subtree(self):
        """L (N, N) sparse (CSR): L[j, k] = 1 when bus k is bus j or below it (row j: j's subtree; column
        k: the branches on the path to k)."""
        import scipy.sparse as sp

        cached = self.__dict__.get("_subtree")
        if cached is not None:  # derived once per feeder: the price model, voltages and loss factors all use it
            return cached
        rows, cols = [], []
        for k in range(self.n):
            a = k
            while a >= 0:
                rows.append(a)
                cols.append(k)
                a = int(self.parent[a])
        L = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self.n, self.n))
        object.__setattr__(self, "_subtree", L)  # frozen: set once, never changed
        return L

    def voltage_drop(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(T, N): v0^2 minus the squared voltage, for net loads ``p``/``q`` (T, N): ``2 (R p + X q) / base``
        with R = L' diag(r) L, computed along the tree (never the dense R)."""
        L = self.subtree()
        fp = (L @ np.atleast_2d(p).T).T  # flows into each bus
        fq = (L @ np.atleast_2d(q).T).T
        return 2.0 * (L.T @ (fp * self.r[None, :] + fq * self.x[None, :]).T).T / self.base_mva


@dataclass
class DlmpResult:
    """Prices (T, N) in EUR/MWh and their components, the dispatch of the upward and downward
    flexibility (T, N) MW, the import (T,) MW, line loadings (T, N) in % of rating, squared voltages (T, N), and the binding
    constraints."""

    price: np.ndarray
    energy: np.ndarray
    losses: np.ndarray
    congestion: np.ndarray
    voltage: np.ndarray
    flex_mw: np.ndarray
    import_mw: np.ndarray
    loading_pct: np.ndarray
    v: np.ndarray
    unserved_mw: np.ndarray
    binding: list[dict]
    status: str
    seconds: float
    down_mw: np.ndarray | None = None

    def frame(self, feeder: RadialFeeder, times=None) -> pd.DataFrame:
        """One row per step and bus: the price and its components."""
        T, N = self.price.shape
        times = np.arange(T) if times is None else np.asarray(times)
        return pd.DataFrame({"step": np.repeat(times, N), "bus": np.tile(feeder.bus_ids, T),
                             "dlmp": self.price.ravel(), "energy": self.energy.ravel(), "losses": self.losses.ravel(),
                             "congestion": self.congestion.ravel(), "voltage": self.voltage.ravel(),
                             "flex_mw": self.flex_mw.ravel(),
                             "down_mw": (np.zeros_like(self.flex_mw) if self.down_mw is None else self.down_mw).ravel()})


def solve_dlmp(feeder: RadialFeeder, load_mw: np.ndarray, price: np.ndarray, load_mvar: np.ndarray | None = None,
               flex_mw: np.ndarray | None = None, flex_cost: np.ndarray | None = None,
               loss_factor: np.ndarray | None = None, voll: float = 10_000.0, penalty: float = 1e6,
               screen: bool = True, decompose: bool = True, down_mw: np.ndarray | None = None,
               down_cost: np.ndarray | None = None) -> DlmpResult:
    """DLMPs for ``T`` steps. ``load_mw``/``load_mvar`` (T, N): net load per bus (negative: export);
    ``price`` (T,) EUR/MWh at the substation; ``flex_mw`` (T, N) upward flexibility per bus (injection
    more, or consumption less) at ``flex_cost`` (N,) or (T, N) EUR/MWh; ``down_mw`` (T, N) downward
    flexibility (injection less, or consumption more) at ``down_cost`` (N,) or (T, N) EUR/MWh;
    ``loss_factor`` (N,).

    Each step is first settled in closed form: with no limit binding, every bus's upward flexibility
    runs where it is cheaper than the energy it replaces (``price x (1 + loss factor)``), its downward
    flexibility where the energy it takes is worth less than its cost (``price x (1 + loss factor) <
    -down_cost``), and that is the bus's price. Only the steps where that dispatch would break a rating or the voltage band go to the
    LP, all of them in one vectorised program; the others' duals are zero, so their prices are exact
    (``screen=False`` sends every step to the LP: the same prices, slower).

    ``decompose``: a step where only line ratings bind is solved on the overloaded lines' subtrees and
    the path from the substation to them alone (every other bus's closed-form net load folded onto its
    nearest bus on that path, so the path's flows and voltages are kept); steps with the same
    overloaded subtrees share one program. A rating only involves the buses below it, so this is the
    whole grid's optimum, and is checked: if the re-dispatch would put any bus outside the program
    beyond a limit, or a voltage binds, the step goes to the whole-grid program."""
    import time

    t0 = time.perf_counter()
    load = np.atleast_2d(np.asarray(load_mw, float))
    T, N = load.shape
    q = np.zeros((T, N)) if load_mvar is None else np.atleast_2d(np.asarray(load_mvar, float))
    lam = np.broadcast_to(np.asarray(price, float), (T,)).astype(float)
    up = np.zeros((T, N)) if flex_mw is None else np.clip(np.atleast_2d(np.asarray(flex_mw, float)), 0, None)
    up = np.broadcast_to(up, (T, N))
    cost = np.zeros((T, N)) if flex_cost is None else np.broadcast_to(np.asarray(flex_cost, float), (T, N))
    dn = np.zeros((T, N)) if down_mw is None else np.clip(np.atleast_2d(np.asarray(down_mw, float)), 0, None)
    dn = np.broadcast_to(dn, (T, N))
    dcost = np.zeros((T, N)) if down_cost is None else np.broadcast_to(np.asarray(down_cost, float), (T, N))
    lf = np.zeros(N) if loss_factor is None else np.asarray(loss_factor, float)
    L = feeder.subtree()
    Qflow = (L @ q.T).T  # (T, N) reactive flow into each bus (the loads', fixed)
    smax = np.asarray(feeder.s_max, float)
    plim = np.sqrt(np.clip(smax[None, :] ** 2 - Qflow ** 2, 0.0, None))  # active room on each line
    mon = np.isfinite(smax)
    mon[0] = False
    # closed form, every step
    marg = lam[:, None] * (1.0 + lf)[None, :]
    g = np.where(cost < marg - 1e-12, up, 0.0)
    d = np.where(dcost < -marg - 1e-12, dn, 0.0)
    net = load - g + d
    flows = (L @ net.T).T
    v = feeder.v0 ** 2 - feeder.voltage_drop(net, q)
    tol = 1e-9
    over = (mon[None, :] & (np.abs(flows) > plim + tol)).any(axis=1)
    outside = ((v < feeder.v_min ** 2 - tol) | (v > feeder.v_max ** 2 + tol)).any(axis=1)
    steps = np.flatnonzero(over | outside) if screen else np.arange(T)
    dlmp = marg.copy()
    congestion = np.zeros((T, N))
    voltage = np.zeros((T, N))
    unserved = np.zeros((T, N))
    binding: list[dict] = []
    status = "optimal"
    if len(steps):
        whole = steps
        if decompose:
            whole = _decomposed(feeder, L, steps, load, q, plim, mon, lam, up, cost, dn, dcost, lf, voll, penalty, net,
                                g, d, v, marg, dlmp, congestion, voltage, unserved, binding, over_rows=(
                                    mon[None, :] & (np.abs(flows) > plim + tol)), outside_rows=(
                                    (v < feeder.v_min ** 2 - tol) | (v > feeder.v_max ** 2 + tol)), tol=tol)
        if len(whole):
            sub = _dlmp_program(feeder, L, load[whole], q[whole], Qflow[whole], plim[whole], mon, lam[whole], up[whole],
                                cost[whole], lf, voll, penalty, dn[whole], dcost[whole])
            status = sub["status"]
            for key, arr in (("price", dlmp), ("congestion", congestion), ("voltage", voltage), ("flex", g),
                             ("down", d), ("unserved", unserved), ("net", net), ("v", v)):
                arr[whole] = sub[key]
            binding += [{**b, "step": int(whole[b["step"]])} for b in sub["binding"]]
        flows[steps] = (L @ net[steps].T).T
        binding.sort(key=lambda b: b["step"])
    names = feeder.line_names or tuple(f"line to {b}" for b in feeder.bus_ids)
    for b in binding:
        if b["constraint"] == "rating":
            b["element"] = names[b.pop("index")]
        else:
            b["element"] = f"bus {feeder.bus_ids[b.pop('index')]}"
    with np.errstate(divide="ignore", invalid="ignore"):
        loading = np.where(np.isfinite(smax) & (smax > 0), 100.0 * np.hypot(flows, Qflow) / smax, np.nan)
    return DlmpResult(price=dlmp, energy=np.repeat(lam[:, None], N, axis=1), losses=lam[:, None] * lf[None, :],
                      congestion=congestion, voltage=voltage, flex_mw=g, import_mw=net @ (1.0 + lf),
                      loading_pct=loading, v=v, unserved_mw=unserved, binding=binding, status=status,
                      seconds=time.perf_counter() - t0, down_mw=d)


def _dlmp_program(feeder: RadialFeeder, L, load, q, Qflow, plim, mon, lam, up, cost, lf, voll, penalty,
                  down=None, down_cost=None) -> dict:
    """The LP for the steps where a limit binds (see the module docstring); sparse in the tree."""
    import cvxpy as cp

    T, N = load.shape
    g = cp.Variable((T, N), nonneg=True)
    u = cp.Variable((T, N), nonneg=True)
    net = cp.Variable((T, N))  # what each bus draws from the network
    has_down = down is not None and bool((np.asarray(down) > 0).any())
    d = cp.Variable((T, N), nonneg=True) if has_down else None
    bal = net == load - g - u + (d if has_down else 0)  # the balance at each bus: its dual is the bus's price
    cons = [bal, g <= up]
    imp = net @ (1.0 + lf)  # the substation's import, losses included (T,)
    obj = [cp.sum(cp.multiply(lam, imp)), cp.sum(cp.multiply(cost, g)), voll * cp.sum(u)]
    if has_down:
        cons.append(d <= down)
        obj.append(cp.sum(cp.multiply(down_cost, d)))
    # DistFlow along the tree, sparse: the flow into each bus is its own net load and its children's
    # flows; its squared voltage is its parent's less the drop on the branch between them
    import scipy.sparse as sp

    kids = np.flatnonzero(feeder.parent >= 0)
    up_of = sp.csr_matrix((np.ones(len(kids)), (feeder.parent[kids], kids)), shape=(N, N))  # [parent, child]
    flows = cp.Variable((T, N))
    cons.append(flows - flows @ up_of.T == net)
    v = cp.Variable((T, N))
    rhs = np.where(np.arange(N)[None, :] == 0, feeder.v0 ** 2, -2.0 * Qflow * feeder.x[None, :] / feeder.base_mva)
    cons.append(v - v @ up_of + 2.0 * cp.multiply(flows, feeder.r[None, :]) / feeder.base_mva == rhs)
    cap_hi = cap_lo = None
    k = np.flatnonzero(mon)
    if len(k):
        s_hi = cp.Variable((T, len(k)), nonneg=True)
        s_lo = cp.Variable((T, len(k)), nonneg=True)
        cap_hi = flows[:, k] <= plim[:, k] + s_hi
        cap_lo = -flows[:, k] <= plim[:, k] + s_lo
        cons += [cap_hi, cap_lo]
        obj.append(penalty * cp.sum(s_hi + s_lo))
    w_lo = cp.Variable((T, N), nonneg=True)
    w_hi = cp.Variable((T, N), nonneg=True)
    v_lo = v >= feeder.v_min ** 2 - w_lo
    v_hi = v <= feeder.v_max ** 2 + w_hi
    cons += [v_lo, v_hi]
    obj.append(penalty * cp.sum(w_lo + w_hi))
    prob = cp.Problem(cp.Minimize(cp.sum(cp.hstack(obj))), cons)
    prob.solve(solver=cp.HIGHS)
    if bal.dual_value is None:
        raise RuntimeError(f"the DLMP program did not solve ({prob.status})")
    price = -np.asarray(bal.dual_value)  # cvxpy's sign for "net == load - g - u": a MW more load costs +price
    congestion = np.zeros((T, N))
    binding: list[dict] = []
    if cap_hi is not None:
        mu = np.abs(np.asarray(cap_hi.dual_value)) - np.abs(np.asarray(cap_lo.dual_value))  # (T, K)
        congestion = (L[k, :].T @ mu.T).T  # a MW more at j flows through every line on its path
        for t, c in zip(*np.nonzero(np.abs(mu) > 1e-7), strict=True):
            binding.append({"step": int(t), "constraint": "rating", "index": int(k[c]),
                            "dual_eur_mwh": round(float(mu[t, c]), 4)})
    eta = np.abs(np.asarray(v_lo.dual_value)) - np.abs(np.asarray(v_hi.dual_value))  # (T, N): low band > 0
    # d(v_i)/d(p_j) = -2 R[i, j] / base, R = L' diag(r) L: along the tree, never dense
    voltage = 2.0 * (L.T @ ((L @ eta.T) * feeder.r[:, None])).T / feeder.base_mva
    for t, i in zip(*np.nonzero(np.abs(eta) > 1e-7), strict=True):
        binding.append({"step": int(t), "constraint": "voltage low" if eta[t, i] > 0 else "voltage high",
                        "index": int(i), "dual_eur_mwh": round(float(eta[t, i]), 4)})
    return {"price": price, "congestion": congestion, "voltage": voltage, "flex": np.asarray(g.value),
            "down": np.asarray(d.value) if has_down else np.zeros((T, N)), "unserved": np.asarray(u.value), "net": np.asarray(net.value), "v": np.asarray(v.value),
            "binding": binding, "status": prob.status}


def _merit(feeder, L, Lr, t, roots, plim, mon, up, cost, dn, dcost, marg, net, g, d, v, q, dlmp, congestion,
           binding, tol) -> bool:
    """One step whose only overloads are the lines into ``roots`` (none below another). Each is relieved
    by a merit order of what its subtree can move the right way, at its net cost per MW (the energy it
    saves or adds included, ``price (1 + loss factor)``):

    * a line carrying load into its subtree: upward flexibility not yet running (``cost - price``) and
      downward flexibility running (backed off: ``-(price + down_cost)``);
    * a line carrying export out of it: downward flexibility not yet running (``down_cost + price``) and
      upward flexibility running (backed off: ``price - cost``).

    The marginal unit's net cost is the rating's dual; every bus below pays it on top of the energy and
    its losses (importing) or is paid it less (exporting). Exactly the program's optimum when nothing
    else binds, which is checked on the whole grid afterwards: False (and nothing changed) when another
    limit would bind, or the flexibility below cannot relieve the line (unserved load or a slack: the
    program decides)."""
    g_t, d_t, net_t = g[t].copy(), d[t].copy(), net[t].copy()
    flows0 = L @ net_t
    mu = {}
    for r in roots:
        below = Lr[r, :].indices
        sgn = 1.0 if flows0[r] > 0 else -1.0
        excess = float(sgn * net_t[below].sum() - plim[t, r])
        if sgn > 0:  # take net load off: turn up g, back off d
            rooms = (np.clip(up[t, below] - g_t[below], 0.0, None), d_t[below])
            costs = (cost[t, below] - marg[t, below], -(marg[t, below] + dcost[t, below]))
        else:  # put net load on: turn up d, back off g
            rooms = (np.clip(dn[t, below] - d_t[below], 0.0, None), g_t[below])
            costs = (dcost[t, below] + marg[t, below], marg[t, below] - cost[t, below])
        room, c = np.concatenate(rooms), np.concatenate(costs)
        order = np.argsort(c, kind="stable")
        cum = np.cumsum(room[order])
        k = int(np.searchsorted(cum, excess - 1e-12))
        if k >= len(order):
            return False
        take = np.zeros(len(room))
        take[order] = np.minimum(room[order], np.clip(excess - np.r_[0.0, cum[:-1]], 0.0, None))
        n_b = len(below)
        first, second = take[:n_b], take[n_b:]
        if sgn > 0:
            g_t[below] += first
            d_t[below] -= second
            net_t[below] -= first + second
        else:
            d_t[below] += first
            g_t[below] -= second
            net_t[below] += first + second
        mu[r] = (sgn, float(c[order[k]]))
    flows = L @ net_t
    vt = feeder.v0 ** 2 - feeder.voltage_drop(net_t[None, :], q[t:t + 1])[0]
    if (mon & (np.abs(flows) > plim[t] + 1e-7)).any() or (vt < feeder.v_min ** 2 - tol).any() or \
            (vt > feeder.v_max ** 2 + tol).any() or any(m < -1e-9 for _, m in mu.values()):
        return False
    g[t], d[t], net[t], v[t] = g_t, d_t, net_t, vt
    dlmp[t] = marg[t]
    for r, (sgn, m) in mu.items():
        below = Lr[r, :].indices
        dlmp[t, below] += sgn * m
        congestion[t, below] = sgn * m
        binding.append({"step": int(t), "constraint": "rating", "index": int(r), "dual_eur_mwh": round(sgn * m, 4)})
    return True


def _decomposed(feeder, L, steps, load, q, plim, mon, lam, up, cost, dn, dcost, lf, voll, penalty, net, g, d, v, marg,
                dlmp, congestion, voltage, unserved, binding, over_rows, outside_rows, tol) -> np.ndarray:
    """Solve the rating-only steps on their overloaded subtrees (see :func:`solve_dlmp`); fills the
    arrays in place for those steps and returns the steps left for the whole-grid program."""
    N = feeder.n
    Lc = L.tocsc()
    Lr = L.tocsr()
    groups: dict[tuple, list[int]] = {}
    whole = []
    for t in steps:
        if outside_rows[t].any():
            whole.append(t)
            continue
        J = np.flatnonzero(over_rows[t])
        anc = {int(j): set(Lc[:, j].indices.tolist()) for j in J}
        roots = tuple(sorted(j for j in anc if not any(a in anc and a != j for a in anc[j])))
        if roots and len(roots) == len(J) and _merit(feeder, L, Lr, int(t), roots, plim, mon, up, cost, dn, dcost,
                                                     marg, net, g, d, v, q, dlmp, congestion, binding, tol):
            continue
        groups.setdefault(roots, []).append(int(t))
    for roots, ts in groups.items():
        ts = np.asarray(ts)
        if not roots:  # nothing overloaded (screen=False sends every step): the whole-grid program
            whole.extend(ts.tolist())
            continue
        S = set()
        for r in roots:
            S |= set(Lc[:, r].indices.tolist())  # the path from the substation (ancestors of r, r itself)
            S |= set(Lr[r, :].indices.tolist())  # the subtree
        S = np.array(sorted(S), dtype=int)
        if len(S) > 0.5 * N:  # hardly smaller: the whole-grid program
            whole.extend(ts.tolist())
            continue
        pos = -np.ones(N, int)
        pos[S] = np.arange(len(S))
        O = np.setdiff1d(np.arange(N), S)
        # each other bus's deepest ancestor on S (parents are numbered before children)
        fold = np.empty(len(O), int)
        for k, o in enumerate(O):
            a = int(feeder.parent[o])
            while pos[a] < 0:
                a = int(feeder.parent[a])
            fold[k] = pos[a]
        fixed = np.zeros((len(ts), len(S)))
        fixed_q = np.zeros((len(ts), len(S)))
        np.add.at(fixed.T, fold, net[ts][:, O].T)
        np.add.at(fixed_q.T, fold, q[ts][:, O].T)
        parent = np.array([-1 if j == 0 else pos[int(feeder.parent[j])] for j in S])
        names = feeder.line_names or tuple(f"line to {b}" for b in feeder.bus_ids)
        sub = RadialFeeder(bus_ids=feeder.bus_ids[S], parent=parent, r=feeder.r[S], x=feeder.x[S],
                           s_max=feeder.s_max[S], base_mva=feeder.base_mva, v0=feeder.v0, v_min=feeder.v_min,
                           v_max=feeder.v_max, line_names=tuple(names[j] for j in S))
        Ls = sub.subtree()
        qs = q[ts][:, S] + fixed_q
        Qs = (Ls @ qs.T).T
        smax = np.asarray(sub.s_max, float)
        pls = np.sqrt(np.clip(smax[None, :] ** 2 - Qs ** 2, 0.0, None))
        ms = mon[S]
        res = _dlmp_program(sub, Ls, load[ts][:, S] + fixed, qs, Qs, pls, ms, lam[ts], up[ts][:, S], cost[ts][:, S],
                            lf[S], voll, penalty, dn[ts][:, S], dcost[ts][:, S])
        # the combined dispatch, checked on the whole grid: nothing outside S may be pushed past a limit
        net_t = net[ts].copy()
        net_t[:, S] = res["net"] - fixed
        flows_t = (L @ net_t.T).T
        v_t = feeder.v0 ** 2 - feeder.voltage_drop(net_t, q[ts])
        bad_o = ((mon[O][None, :] & (np.abs(flows_t[:, O]) > plim[ts][:, O] + tol))
                 | (v_t[:, O] < feeder.v_min ** 2 - tol) | (v_t[:, O] > feeder.v_max ** 2 + tol)).any(axis=1)
        # a voltage limit binding inside S could be relieved from outside it (the shared path): whole grid
        volt = np.zeros(len(ts), bool)
        for b in res["binding"]:
            if b["constraint"] != "rating":
                volt[b["step"]] = True
        ok = ~bad_o & ~volt
        whole.extend(ts[~ok].tolist())
        for k in np.flatnonzero(ok):
            t = ts[k]
            dlmp[t] = marg[t]
            dlmp[t, S] = res["price"][k]
            congestion[t, S] = res["congestion"][k]
            voltage[t, S] = res["voltage"][k]
            g[t, S] = res["flex"][k]
            d[t, S] = res["down"][k]
            unserved[t, S] = res["unserved"][k]
            net[t] = net_t[k]
            v[t] = v_t[k]
        keep = {int(k) for k in np.flatnonzero(ok)}
        binding += [{**b, "step": int(ts[b["step"]]), "index": int(S[b["index"]])} for b in res["binding"]
                    if b["step"] in keep]
    return np.asarray(sorted(whole), int)
