"""PGM's symmetric state-estimation model as an explicit bus-branch WLS problem (``WlsModel``).

Power-grid-model estimates the state but does not expose the WLS objective, residuals or Jacobian.
This module rebuilds the same model (same per-unit branch admittances, link-connected nodes merged)
so ``estimation`` can report J(x) and residuals and ``residuals`` can form the residual covariance.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp
from power_grid_model import ComponentType, MeasuredTerminalType
from scipy.sparse.csgraph import connected_components

from gridpipeline.grid.network import PgmModel

BASE_POWER = 1e6  # PGM's per-unit base (VA)

__all__ = ["BASE_POWER", "WlsModel", "branch_params"]


class WlsModel:
    """PGM's symmetric state-estimation model as an explicit bus-branch WLS problem.

    Electrical buses are PGM nodes merged over closed links; only buses connected to a source are
    in the state. Branch admittances follow PGM exactly (per unit on 1 MVA and the node rated
    voltage; transformer pi model with tap/phase ratio on the from side). Shunts are in the
    admittance matrix. Measurement rows: voltage magnitudes, branch P/Q at a terminal, bus
    injections (sum over all appliances of a bus, only where all are measured) and zero-injection
    constraints for buses without appliances.
    """

    def __init__(self, model: PgmModel, data: dict, sensors: dict, sensor_table: pd.DataFrame, used: pd.DataFrame):
        self.model = model
        node = data[ComponentType.node]
        nn = len(node)
        self.node_ids = node["id"]
        u_rated = node["u_rated"].astype(float)
        npos = lambda ids: np.searchsorted(self.node_ids, ids)
        # --- merge link-connected nodes
        link = data.get(ComponentType.link)
        if link is not None and len(link):
            cl = (link["from_status"] == 1) & (link["to_status"] == 1)
            a, b = npos(link["from_node"][cl]), npos(link["to_node"][cl])
        else:
            a = b = np.zeros(0, dtype=np.int64)
        g = sp.coo_matrix((np.ones(len(a)), (a, b)), shape=(nn, nn))
        _, lab = connected_components(g, directed=False)
        # representative node per group: first node of the group
        first = pd.Series(np.arange(nn)).groupby(lab).transform("min").to_numpy()
        # --- branches
        br = []
        for comp in (ComponentType.line, ComponentType.transformer):
            arr = data.get(comp)
            if arr is None or not len(arr):
                continue
            params = branch_params(comp, arr, u_rated[npos(arr["from_node"])], u_rated[npos(arr["to_node"])],
                                    self.model.frequency)
            br.append((comp, arr["id"], first[npos(arr["from_node"])], first[npos(arr["to_node"])],
                       arr["from_status"].astype(bool), arr["to_status"].astype(bool), *params))
        # --- energised nodes: connected to a source through closed branches
        src = data.get(ComponentType.source)
        src_nodes = first[npos(src["node"][src["status"] == 1])] if src is not None and len(src) else np.zeros(0, int)
        ea, eb = [], []
        for comp, ids, f, t, fs, ts, *_ in br:
            both = fs & ts
            ea.append(f[both])
            eb.append(t[both])
        ea = np.concatenate(ea) if ea else np.zeros(0, int)
        eb = np.concatenate(eb) if eb else np.zeros(0, int)
        g2 = sp.coo_matrix((np.ones(len(ea)), (ea, eb)), shape=(nn, nn))
        _, lab2 = connected_components(g2, directed=False)
        live_labels = np.unique(lab2[src_nodes])
        energized_rep = np.isin(lab2, live_labels) & (np.arange(nn) == first)
        reps = np.flatnonzero(energized_rep)
        self.n_bus = len(reps)
        bus_of_rep = np.full(nn, -1, dtype=np.int64)
        bus_of_rep[reps] = np.arange(self.n_bus)
        self.bus_of_node = bus_of_rep[first]            # node position -> state bus (-1: dead)
        self.bus_rep_node = reps                          # state bus -> representative node position
        self.u_rated = u_rated[reps]
        # angle reference: one source bus per energised island
        island = lab2[reps]
        ref = []
        for lbl in np.unique(island):
            cand = [s for s in src_nodes if lab2[s] == lbl]
            ref.append(int(bus_of_rep[cand[0]]))
        self.ref_buses = np.array(sorted(set(ref)), dtype=np.int64)
        # --- admittance matrices
        nb = self.n_bus
        rows_f, rows_t, yff, yft, ytf, ytt, bkey = [], [], [], [], [], [], []
        ysh = np.zeros(nb, dtype=complex)
        for comp, ids, f, t, fs, ts, pyff, pyft, pytf, pytt, pshf, psht in br:
            bf, bt = self.bus_of_node[f], self.bus_of_node[t]
            both = fs & ts & (bf >= 0) & (bt >= 0)
            rows_f.append(bf[both])
            rows_t.append(bt[both])
            yff.append(pyff[both])
            yft.append(pyft[both])
            ytf.append(pytf[both])
            ytt.append(pytt[both])
            bkey.append(np.stack([np.full(both.sum(), int(comp == ComponentType.transformer)), ids[both]], axis=1))
            only_f = fs & ~ts & (bf >= 0)
            only_t = ts & ~fs & (bt >= 0)
            np.add.at(ysh, bf[only_f], pshf[only_f])
            np.add.at(ysh, bt[only_t], psht[only_t])
        shunt = data.get(ComponentType.shunt)
        if shunt is not None and len(shunt):
            on = shunt["status"] == 1
            pos = npos(shunt["node"][on])
            bsh = self.bus_of_node[pos]
            y = (shunt["g1"][on] + 1j * shunt["b1"][on]) * u_rated[pos] ** 2 / BASE_POWER
            ok = bsh >= 0
            np.add.at(ysh, bsh[ok], y[ok])
        self.f = np.concatenate(rows_f) if rows_f else np.zeros(0, int)
        self.t = np.concatenate(rows_t) if rows_t else np.zeros(0, int)
        self.yff = np.concatenate(yff) if yff else np.zeros(0, complex)
        self.yft = np.concatenate(yft) if yft else np.zeros(0, complex)
        self.ytf = np.concatenate(ytf) if ytf else np.zeros(0, complex)
        self.ytt = np.concatenate(ytt) if ytt else np.zeros(0, complex)
        keys = np.concatenate(bkey) if bkey else np.zeros((0, 2), int)
        # (component code 0 line / 1 trafo, PGM id) per WLS branch; PGM ids are unique over all components,
        # so a dense id -> branch position array is the lookup
        self.branch_keys = np.asarray(keys, dtype=np.int64).reshape(-1, 2)
        self.branch_pos_of_id = np.full(self.model.n_ids, -1, dtype=np.int64)
        self.branch_pos_of_id[self.branch_keys[:, 1]] = np.arange(len(self.branch_keys))
        nbr = len(self.f)
        ar = np.arange(nbr)
        self.Cf = sp.csr_matrix((np.ones(nbr), (ar, self.f)), shape=(nbr, nb))
        self.Ct = sp.csr_matrix((np.ones(nbr), (ar, self.t)), shape=(nbr, nb))
        self.Yf = sp.csr_matrix((np.r_[self.yff, self.yft], (np.r_[ar, ar], np.r_[self.f, self.t])), shape=(nbr, nb))
        self.Yt = sp.csr_matrix((np.r_[self.ytf, self.ytt], (np.r_[ar, ar], np.r_[self.f, self.t])), shape=(nbr, nb))
        self.Ybus = (self.Cf.T @ self.Yf + self.Ct.T @ self.Yt + sp.diags(ysh)).tocsr()
        self._rows(data, sensors, sensor_table, used, npos)

    # -------------------------------------------------------------------------- measurement rows
    def _rows(self, data, sensors, st: pd.DataFrame, used: pd.DataFrame, npos):
        """Effective WLS rows. Arrays: kind (0 V, 1 P_from, 2 Q_from, 3 P_to, 4 Q_to, 5 P_inj,
        6 Q_inj), index (bus or branch), z, sigma (per unit), pseudo, constraint. Members (which
        ``used`` rows feed a WLS row, with their share of its residual): ``members_of(i)``."""
        node = data[ComponentType.node]
        parts = []   # dicts of arrays: kind, index, z, sigma, pseudo, constraint, key (row key)
        mem = []     # (row key, used pos, share)
        key0 = 0
        vs = sensors.get(ComponentType.sym_voltage_sensor)
        stv = st[st.type == "u"]
        if vs is not None and len(vs):
            pos = npos(vs["measured_object"])
            b = self.bus_of_node[pos]
            ur = node["u_rated"][pos]
            ok = b >= 0
            keys = key0 + np.arange(len(vs))
            parts.append({"kind": np.zeros(ok.sum(), np.int64), "index": b[ok], "z": (vs["u_measured"] / ur)[ok],
                          "sigma": (vs["u_sigma"] / ur)[ok], "pseudo": stv.pseudo_p.to_numpy()[ok],
                          "constraint": np.zeros(ok.sum(), bool), "key": keys[ok]})
            prow = stv.p_row.to_numpy()
            m = ok & (prow >= 0)
            mem.append((keys[m], prow[m], np.ones(m.sum())))
            key0 += len(vs)
        ps = sensors.get(ComponentType.sym_power_sensor)
        app_frame = None
        if ps is not None and len(ps):
            stp = st[st.type == "pq"]
            tt = ps["measured_terminal_type"].astype(np.int64)
            isbr = np.isin(tt, [int(MeasuredTerminalType.branch_from), int(MeasuredTerminalType.branch_to)])
            # branch rows
            if isbr.any():
                obj = ps["measured_object"][isbr].astype(np.int64)
                comp = (self.model.id_table[obj] == "trafo").astype(np.int64)
                bpos = self.branch_pos_of_id[obj]
                bpos = np.where(self.branch_keys[np.maximum(bpos, 0), 0] == comp, bpos, -1) if len(self.branch_keys) \
                    else np.full(len(obj), -1, dtype=np.int64)
                side = (tt[isbr] == int(MeasuredTerminalType.branch_to)).astype(np.int64)
                ok = bpos >= 0
                for q_, val, sg, pse, rows in ((0, ps["p_measured"], ps["p_sigma"], stp.pseudo_p, stp.p_row),
                                              (1, ps["q_measured"], ps["q_sigma"], stp.pseudo_q, stp.q_row)):
                    keys = key0 + np.arange(isbr.sum())
                    parts.append({"kind": (1 + 2 * side + q_)[ok], "index": bpos[ok], "z": (val[isbr] / BASE_POWER)[ok],
                                  "sigma": (sg[isbr] / BASE_POWER)[ok], "pseudo": pse.to_numpy()[isbr][ok],
                                  "constraint": np.zeros(ok.sum(), bool), "key": keys[ok]})
                    r = rows.to_numpy()[isbr]
                    m = ok & (r >= 0)
                    mem.append((keys[m], r[m], np.ones(m.sum())))
                    key0 += isbr.sum()
            # appliance sensors: Kalman-merge per appliance
            app = ~isbr
            if app.any():
                app_frame = pd.DataFrame({
                    "obj": ps["measured_object"][app].astype(np.int64),
                    "p": ps["p_measured"][app], "sp": ps["p_sigma"][app], "q": ps["q_measured"][app],
                    "sq": ps["q_sigma"][app], "pse_p": stp.pseudo_p.to_numpy()[app], "pse_q": stp.pseudo_q.to_numpy()[app],
                    "p_row": stp.p_row.to_numpy()[app], "q_row": stp.q_row.to_numpy()[app]})
        # connected appliances (status 1) with their sign in generator convention; shunts are in Ybus
        apps = []
        for comp, sign in ((ComponentType.sym_load, -1.0), (ComponentType.sym_gen, 1.0), (ComponentType.source, 1.0)):
            arr = data.get(comp)
            if arr is None or not len(arr):
                continue
            on = arr["status"] == 1
            apps.append(pd.DataFrame({"obj": arr["id"][on].astype(np.int64), "node": npos(arr["node"][on]),
                                      "sign": sign}))
        apps = pd.concat(apps, ignore_index=True) if apps else pd.DataFrame(columns=["obj", "node", "sign"])
        apps["bus"] = self.bus_of_node[apps.node.to_numpy().astype(np.int64)] if len(apps) else []
        apps = apps[apps.bus >= 0]
        # zero-injection constraints: energised buses without any connected appliance
        has_app = np.zeros(self.n_bus, bool)
        has_app[apps.bus.to_numpy().astype(np.int64)] = True
        zb = np.flatnonzero(~has_app)
        for q_ in (0, 1):
            parts.append({"kind": np.full(len(zb), 5 + q_), "index": zb, "z": np.zeros(len(zb)),
                          "sigma": np.full(len(zb), np.nan), "pseudo": np.zeros(len(zb), bool),
                          "constraint": np.ones(len(zb), bool), "key": key0 + np.arange(len(zb))})
            key0 += len(zb)
        if app_frame is not None and len(apps):
            for q_, (val, sg, pse, rowc) in enumerate((("p", "sp", "pse_p", "p_row"), ("q", "sq", "pse_q", "q_row"))):
                f = app_frame
                w = 1.0 / f[sg].to_numpy() ** 2
                g = pd.DataFrame({"obj": f.obj, "zw": f[val].to_numpy() * w, "w": w, "pse": f[pse]})
                agg = g.groupby("obj").agg(zw=("zw", "sum"), w=("w", "sum"), pse=("pse", "any"))
                merged = agg.zw / agg.w
                var = 1.0 / agg.w
                a = apps.merge(pd.DataFrame({"obj": agg.index, "z": merged.to_numpy(), "var": var.to_numpy(),
                                             "pse": agg.pse.to_numpy()}), on="obj", how="left")
                missing_bus = a.bus[a.z.isna()].unique()
                a = a[~a.bus.isin(missing_bus)]
                if not len(a):
                    continue
                a = a.assign(sz=a.sign * a.z)
                bagg = a.groupby("bus").agg(z=("sz", "sum"), var=("var", "sum"), pse=("pse", "any"))
                keys = key0 + np.arange(len(bagg))
                parts.append({"kind": np.full(len(bagg), 5 + q_), "index": bagg.index.to_numpy().astype(np.int64),
                              "z": bagg.z.to_numpy() / BASE_POWER, "sigma": np.sqrt(bagg["var"].to_numpy()) / BASE_POWER,
                              "pseudo": bagg.pse.to_numpy().astype(bool), "constraint": np.zeros(len(bagg), bool),
                              "key": keys})
                # members: every sensor row of the bus's appliances, share = appliance var / bus var
                key_of_bus = pd.Series(keys, index=bagg.index)
                var_of_bus = bagg["var"]
                fm = f[[ "obj", rowc]].rename(columns={rowc: "row"})
                fm = fm[fm.row >= 0].merge(a[["obj", "bus", "var"]], on="obj")
                mem.append((key_of_bus.reindex(fm.bus).to_numpy(), fm.row.to_numpy(),
                            (fm["var"] / var_of_bus.reindex(fm.bus).to_numpy()).to_numpy()))
                key0 += len(bagg)
        cat = lambda k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0)
        keys = cat("key").astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.kind = cat("kind").astype(np.int64)[order]
        self.index = cat("index").astype(np.int64)[order]
        self.z = cat("z").astype(float)[order]
        self.sigma = cat("sigma").astype(float)[order]
        self.pseudo = cat("pseudo").astype(bool)[order]
        self.constraint = cat("constraint").astype(bool)[order]
        # members -> row positions
        row_of_key = pd.Series(np.arange(len(keys)), index=keys[order])
        if mem:
            mk = np.concatenate([m[0] for m in mem]).astype(np.int64)
            mp = np.concatenate([m[1] for m in mem]).astype(np.int64)
            ms = np.concatenate([m[2] for m in mem]).astype(float)
        else:
            mk = mp = np.zeros(0, np.int64)
            ms = np.zeros(0)
        mr = row_of_key.reindex(mk).to_numpy().astype(np.int64)
        o = np.argsort(mr, kind="stable")
        self.mem_row, self.mem_pos, self.mem_share = mr[o], mp[o], ms[o]
        self.mem_ptr = np.searchsorted(self.mem_row, np.arange(len(self.kind) + 1))
        self._constraint_sigma()
        real = ~self.constraint
        self.n_state = 2 * self.n_bus - len(self.ref_buses)
        self.m = int(real.sum())
        self.dof = int(self.m + self.constraint.sum() - self.n_state)

    def members_of(self, i: int) -> list[tuple[int, float]]:
        """(position in ``used``, residual share) of the measurements behind WLS row ``i``."""
        s, e = self.mem_ptr[i], self.mem_ptr[i + 1]
        return list(zip(self.mem_pos[s:e].tolist(), self.mem_share[s:e].tolist()))

    def _constraint_sigma(self, ratio: float = 1e-2) -> None:
        """Zero-injection rows are constraints; in the WLS/Omega algebra they get a penalty sigma of
        ``ratio`` times the smallest power-row sigma at the bus or its neighbours (weight 1e4 x),
        tight enough to hold them (Omega accurate to ~1e-4) without ruining the conditioning."""
        if not self.constraint.any():
            return
        nb = self.n_bus
        best = np.full(nb, np.inf)
        pw = ~self.constraint & (self.kind >= 1)
        inj = pw & (self.kind >= 5)
        np.minimum.at(best, self.index[inj], self.sigma[inj])
        fl = pw & (self.kind <= 4)
        np.minimum.at(best, self.f[self.index[fl]], self.sigma[fl])
        np.minimum.at(best, self.t[self.index[fl]], self.sigma[fl])
        # neighbours through branches
        nbest = best.copy()
        np.minimum.at(nbest, self.f, best[self.t])
        np.minimum.at(nbest, self.t, best[self.f])
        fallback = np.nanmedian(self.sigma[pw]) if pw.any() else 1e-3
        s = nbest[self.index[self.constraint]]
        s = np.where(np.isfinite(s), s, fallback)
        self.sigma[self.constraint] = s * ratio

    # ----------------------------------------------------------------------------- evaluation
    def state_from_pgm(self, out: dict) -> np.ndarray:
        node = out[ComponentType.node]
        pos = self.bus_rep_node
        return node["u_pu"][pos] * np.exp(1j * node["u_angle"][pos])

    def h(self, V: np.ndarray) -> np.ndarray:
        Sf = V[self.f] * np.conj(self.Yf @ V)
        St = V[self.t] * np.conj(self.Yt @ V)
        Sbus = V * np.conj(self.Ybus @ V)
        out = np.empty(len(self.kind))
        k, i = self.kind, self.index
        out[k == 0] = np.abs(V[i[k == 0]])
        out[k == 1] = Sf[i[k == 1]].real
        out[k == 2] = Sf[i[k == 2]].imag
        out[k == 3] = St[i[k == 3]].real
        out[k == 4] = St[i[k == 4]].imag
        out[k == 5] = Sbus[i[k == 5]].real
        out[k == 6] = Sbus[i[k == 6]].imag
        return out

    def jacobian(self, V: np.ndarray) -> sp.csr_matrix:
        """d h / d [theta (non-reference buses), |V|] as a sparse (rows x n_state) matrix."""
        nb = self.n_bus
        Vm = np.abs(V)
        Vn = V / Vm
        dV = sp.diags(V)
        dVn = sp.diags(Vn)
        Ibus = self.Ybus @ V
        dSb_da = (1j * dV @ (sp.diags(Ibus) - self.Ybus @ dV).conj()).tocsr()
        dSb_dm = (dV @ (self.Ybus @ dVn).conj() + sp.diags(np.conj(Ibus) * Vn)).tocsr()
        If, It = self.Yf @ V, self.Yt @ V
        Vf, Vt = V[self.f], V[self.t]
        dSf_da = (1j * (sp.diags(np.conj(If)) @ self.Cf @ dV - sp.diags(Vf) @ (self.Yf @ dV).conj())).tocsr()
        dSf_dm = (sp.diags(Vf) @ (self.Yf @ dVn).conj() + sp.diags(np.conj(If)) @ self.Cf @ dVn).tocsr()
        dSt_da = (1j * (sp.diags(np.conj(It)) @ self.Ct @ dV - sp.diags(Vt) @ (self.Yt @ dV).conj())).tocsr()
        dSt_dm = (sp.diags(Vt) @ (self.Yt @ dVn).conj() + sp.diags(np.conj(It)) @ self.Ct @ dVn).tocsr()
        k, idx = self.kind, self.index
        parts = []
        order = []
        for code, (ma, mm, take) in {
            1: (dSf_da, dSf_dm, np.real), 2: (dSf_da, dSf_dm, np.imag),
            3: (dSt_da, dSt_dm, np.real), 4: (dSt_da, dSt_dm, np.imag),
            5: (dSb_da, dSb_dm, np.real), 6: (dSb_da, dSb_dm, np.imag),
        }.items():
            sel = np.flatnonzero(k == code)
            if not len(sel):
                continue
            a = ma[idx[sel]]
            m_ = mm[idx[sel]]
            parts.append(sp.hstack([_part(a, take), _part(m_, take)]).tocsr())
            order.append(sel)
        sel = np.flatnonzero(k == 0)
        if len(sel):
            parts.append(sp.csr_matrix((np.ones(len(sel)), (np.arange(len(sel)), nb + idx[sel])), shape=(len(sel), 2 * nb)))
            order.append(sel)
        H = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, 2 * nb))
        perm = np.empty(len(self.kind), dtype=np.int64)
        perm[np.concatenate(order)] = np.arange(len(self.kind))
        H = H[perm]
        keep = np.ones(2 * nb, dtype=bool)
        keep[self.ref_buses] = False
        return H[:, np.flatnonzero(keep)].tocsr()

    def refine(self, V: np.ndarray, max_iter: int = 6, tol: float = 1e-10) -> tuple[np.ndarray, bool, str]:
        """Gauss-Newton steps on the AC WLS objective from ``V``: (V, converged, info)."""
        from scipy.sparse.linalg import splu

        nb = self.n_bus
        keep = np.ones(2 * nb, dtype=bool)
        keep[self.ref_buses] = False
        w = 1.0 / self.sigma ** 2
        for it in range(max_iter):
            r = self.z - self.h(V)
            H = self.jacobian(V)
            G = (H.T @ sp.diags(w) @ H).tocsc()
            dg = G.diagonal()
            sc = 1.0 / np.sqrt(np.where(dg > 0, dg, 1.0))
            try:
                lu = splu((sp.diags(sc) @ G @ sp.diags(sc)).tocsc())
                dx = sc * lu.solve(sc * (H.T @ (w * r)))
            except RuntimeError as exc:
                return V, False, f"gain matrix singular ({exc})"
            if not np.all(np.isfinite(dx)):
                return V, False, "non-finite step"
            full = np.zeros(2 * nb)
            full[keep] = dx
            V = (np.abs(V) + full[nb:]) * np.exp(1j * (np.angle(V) + full[:nb]))
            if np.max(np.abs(dx)) < tol:
                return V, True, f"{it + 1} iterations"
        return V, True, f"{max_iter} iterations (step {np.max(np.abs(dx)):.1e})"

    def write_state(self, out: dict, V: np.ndarray) -> None:
        """Overwrite node voltages and line/transformer flows of a PGM output with state ``V``."""
        node = out[ComponentType.node]
        pos = self.bus_rep_node
        node["u_pu"][pos] = np.abs(V)
        node["u_angle"][pos] = np.angle(V)
        node["u"][pos] = np.abs(V) * self.u_rated
        # non-representative nodes are copied from their representative later (_expand_nodes)
        Sf, St, If, It = self.branch_flows(V)
        for code, comp in ((0, ComponentType.line), (1, ComponentType.transformer)):
            arr = out.get(comp)
            if arr is None or not len(arr):
                continue
            ks = np.flatnonzero(self.branch_keys[:, 0] == code)
            if not len(ks):
                continue
            ids = self.branch_keys[ks, 1]
            rows = np.searchsorted(arr["id"], ids)
            uf = self.u_rated[self.f[ks]]
            ut = self.u_rated[self.t[ks]]
            arr["p_from"][rows] = Sf[ks].real * BASE_POWER
            arr["q_from"][rows] = Sf[ks].imag * BASE_POWER
            arr["s_from"][rows] = np.abs(Sf[ks]) * BASE_POWER
            arr["i_from"][rows] = np.abs(If[ks]) * BASE_POWER / (math.sqrt(3) * uf)
            arr["p_to"][rows] = St[ks].real * BASE_POWER
            arr["q_to"][rows] = St[ks].imag * BASE_POWER
            arr["s_to"][rows] = np.abs(St[ks]) * BASE_POWER
            arr["i_to"][rows] = np.abs(It[ks]) * BASE_POWER / (math.sqrt(3) * ut)

    def objective(self, V: np.ndarray) -> tuple[float, np.ndarray]:
        """(J over non-constraint rows, residual vector z - h(V) in per unit)."""
        r = self.z - self.h(V)
        real = ~self.constraint
        return float(np.sum((r[real] / self.sigma[real]) ** 2)), r

    def branch_flows(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(S_from, S_to, I_from, I_to) per active branch in per unit."""
        If, It = self.Yf @ V, self.Yt @ V
        return V[self.f] * np.conj(If), V[self.t] * np.conj(It), If, It


def _part(m: sp.csr_matrix, take) -> sp.csr_matrix:
    m = m.tocsr()
    return sp.csr_matrix((take(m.data), m.indices, m.indptr), shape=m.shape)


def branch_params(comp, arr, u1_rated, u2_rated, f_hz):
    """PGM's symmetric branch parameters (per unit, base 1 MVA, node rated voltages):
    (yff, yft, ytf, ytt, shunt_if_only_from_connected, shunt_if_only_to_connected)."""
    if comp == ComponentType.line:
        base_y = BASE_POWER / (u1_rated ** 2)
        ys = 1.0 / (arr["r1"] + 1j * arr["x1"]) / base_y
        tan1 = np.nan_to_num(arr["tan1"], nan=0.0)
        ysh = 2 * np.pi * f_hz * np.nan_to_num(arr["c1"], nan=0.0) / base_y * (tan1 + 1j)
        tap = np.ones(len(arr), dtype=complex)
    else:
        u1, u2, sn = arr["u1"].astype(float), arr["u2"].astype(float), arr["sn"].astype(float)
        nominal_ratio = u1_rated / u2_rated
        k = (u1 / u2) / nominal_ratio
        base_y_to = BASE_POWER / (u2_rated ** 2)
        uk, pk = arr["uk"].astype(float), np.nan_to_num(arr["pk"].astype(float))
        z_abs = np.abs(uk) * u2 * u2 / sn
        r = pk * u2 * u2 / sn / sn
        x = np.sign(np.where(uk >= 0, 1.0, -1.0)) * np.sqrt(np.maximum(z_abs ** 2 - r ** 2, 0.0))
        ys = (1.0 / (r + 1j * x)) / base_y_to
        i0, p0 = np.nan_to_num(arr["i0"].astype(float)), np.nan_to_num(arr["p0"].astype(float))
        y_abs = i0 * sn / u2 / u2
        g = p0 / u2 / u2
        b = np.where(y_abs ** 2 - g ** 2 > 0, -np.sqrt(np.maximum(y_abs ** 2 - g ** 2, 0.0)), 0.0)
        ysh = (g + 1j * b) / base_y_to
        tap = k * np.exp(1j * arr["clock"].astype(float) * np.pi / 6)
    t_abs = np.abs(tap)
    ytt = ys + 0.5 * ysh
    yff = ytt / t_abs ** 2
    yft = -ys / np.conj(tap)
    ytf = -ys / tap
    with np.errstate(divide="ignore", invalid="ignore"):
        single = np.where(np.abs(ysh) < 1e-14, 0.0, 0.5 * ysh + 1.0 / (1.0 / ys + 2.0 / ysh))
    return yff, yft, ytf, ytt, single / t_abs ** 2, single
