"""True grid states by batch power flow with power-grid-model.

``TruthEngine(net)`` converts the pandapower net once (power_grid_model_io ``PandaPowerConverter``)
and keeps the id maps. ``solve(injections, switch_closed)`` runs one batch power flow (one scenario
per instant) and returns ``States`` in pandapower element order and pandapower units/sign conventions.

How the pandapower model is reproduced (measured: bus voltages agree with ``pandapower.runpp(...,
trafo_model="pi")`` to about 1e-8 pu on the sample grid):

* The converter gives the PGM ``source`` a short-circuit power of 1e10 VA when ``s_sc_max_mva`` is
  unset; its internal impedance then drops about 1e-3 pu on the sample grid. pandapower's ext_grid
  is an ideal voltage source in power flow, so ``sk`` is set to 1e20 VA here.
* PGM models a transformer as a pi equivalent (magnetising admittance split over both sides);
  pandapower's default ``trafo_model="t"`` differs by up to ~1e-6 pu. Compare with
  ``trafo_model="pi"``.
* The converter raises on pandapower ``storage``; batteries are added as PGM ``sym_load`` rows
  (p > 0 = charging = consumption, as in pandapower).
* Every pandapower load becomes up to three PGM ``sym_load`` rows (constant power, impedance and
  current shares from ``const_{z,i}_{p,q}_percent``, NaN read as 0); blocks that are zero for all loads
  are dropped.
* Switches: line/trafo switches (``et`` 'l'/'t') open the branch end at the switch's bus
  (``from_status``/``to_status``); bus-bus switches (``et`` 'b') are PGM ``link`` rows.
* Element ``scaling`` is *not* applied: ``Injections`` already hold actual MW/Mvar.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gridpipeline.world.model import Injections

log = logging.getLogger(__name__)

#: Short-circuit power given to PGM sources so they behave as ideal slacks (pandapower ext_grid).
SOURCE_SK_VA = 1e20

_LOAD_BLOCKS = ("const_power", "const_impedance", "const_current")


@dataclass(frozen=True)
class States:
    """Power-flow results for each instant of ``times`` (rows) and element (columns).

    Columns follow the row order of the pandapower tables; ``<table>_index`` hold their index labels.
    Units and signs as in pandapower's ``res_*`` tables: branch p/q/i measured at each end flowing *into*
    the branch; loads/storage p > 0 consume; sgen/ext_grid p > 0 inject. Rows whose power flow did not
    converge have ``converged`` False and NaN everywhere. De-energised buses have NaN voltages.
    """

    times: pd.DatetimeIndex
    converged: np.ndarray
    bus_index: np.ndarray
    line_index: np.ndarray
    trafo_index: np.ndarray
    load_index: np.ndarray
    sgen_index: np.ndarray
    storage_index: np.ndarray
    ext_grid_index: np.ndarray
    bus_u_pu: np.ndarray
    bus_u_angle_rad: np.ndarray
    bus_u_kv: np.ndarray
    line_p_from_mw: np.ndarray
    line_q_from_mvar: np.ndarray
    line_i_from_ka: np.ndarray
    line_p_to_mw: np.ndarray
    line_q_to_mvar: np.ndarray
    line_i_to_ka: np.ndarray
    line_loading_percent: np.ndarray
    trafo_p_hv_mw: np.ndarray
    trafo_q_hv_mvar: np.ndarray
    trafo_i_hv_ka: np.ndarray
    trafo_p_lv_mw: np.ndarray
    trafo_q_lv_mvar: np.ndarray
    trafo_i_lv_ka: np.ndarray
    trafo_loading_percent: np.ndarray
    load_p_mw: np.ndarray
    load_q_mvar: np.ndarray
    sgen_p_mw: np.ndarray
    sgen_q_mvar: np.ndarray
    storage_p_mw: np.ndarray
    storage_q_mvar: np.ndarray
    ext_grid_p_mw: np.ndarray
    ext_grid_q_mvar: np.ndarray

    def __len__(self) -> int:
        return len(self.times)


def _float_col(df: pd.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in df:
        return np.full(len(df), default, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float).fillna(default).to_numpy()


class TruthEngine:
    """Batch power flow of a pandapower net with power-grid-model (see the module docstring)."""

    def __init__(self, net, error_tolerance: float = 1e-8, max_iterations: int = 20, threading: int = -1):
        from power_grid_model import ComponentType as CT
        from power_grid_model import DatasetType, PowerGridModel, initialize_array
        from power_grid_model_io.converters import PandaPowerConverter

        self.net = net
        self.error_tolerance = error_tolerance
        self.max_iterations = max_iterations
        self.threading = threading

        load = net.load.copy()
        fr = {}
        for x in ("p", "q"):
            z = _float_col(load, f"const_z_{x}_percent", 0.0) / 100.0
            i = _float_col(load, f"const_i_{x}_percent", 0.0) / 100.0
            fr[x] = {"const_power": 1.0 - z - i, "const_impedance": z, "const_current": i}
            load[f"const_z_{x}_percent"] = z * 100.0
            load[f"const_i_{x}_percent"] = i * 100.0
        data = {k: v for k, v in net.items() if isinstance(v, pd.DataFrame)}
        data["load"] = load
        data["storage"] = net.storage.iloc[0:0]
        conv = PandaPowerConverter(
            system_frequency=float(getattr(net, "f_hz", 50.0) or 50.0), log_level=logging.WARNING
        )
        inp, _ = conv.load_input_data(data, make_extra_info=False)
        inp = dict(inp)
        if CT.source in inp:
            inp[CT.source]["sk"] = SOURCE_SK_VA

        n_load = len(net.load)
        # Keep the load blocks that carry any power; remember their rows and shares.
        sym = inp.get(CT.sym_load, initialize_array(DatasetType.input, CT.sym_load, 0))
        keep_rows, self._load_blocks = [], []
        for b, name in enumerate(_LOAD_BLOCKS):
            fp, fq = fr["p"][name], fr["q"][name]
            if name == "const_power" or np.any(fp != 0) or np.any(fq != 0):
                start = len(np.concatenate(keep_rows)) if keep_rows else 0
                keep_rows.append(np.arange(b * n_load, (b + 1) * n_load))
                self._load_blocks.append((slice(start, start + n_load), fp, fq))
        sym = sym[np.concatenate(keep_rows)] if keep_rows else sym[:0]
        n_sym_loads = len(sym)
        # Batteries as sym_load rows appended after the loads.
        st = net.storage
        next_id = 1 + max(int(np.max(a["id"])) for a in inp.values() if len(a))
        st_rows = initialize_array(DatasetType.input, CT.sym_load, len(st))
        if len(st):
            bus_ids = dict(zip(net.bus.index, inp[CT.node]["id"]))
            st_rows["id"] = np.arange(next_id, next_id + len(st))
            st_rows["node"] = [bus_ids[b] for b in st.bus]
            st_rows["status"] = st.in_service.astype(bool).to_numpy()
            st_rows["type"] = 0  # LoadGenType.const_power
            sc = _float_col(st, "scaling", 1.0)
            st_rows["p_specified"] = _float_col(st, "p_mw", 0.0) * sc * 1e6
            st_rows["q_specified"] = _float_col(st, "q_mvar", 0.0) * sc * 1e6
        inp[CT.sym_load] = np.concatenate([sym, st_rows])
        self._storage_rows = slice(n_sym_loads, n_sym_loads + len(st))

        self._input = inp
        self._model = PowerGridModel(inp)
        self._CT = CT
        self._init_update = lambda ct, shape: initialize_array(DatasetType.update, ct, shape)

        # Index arrays (pandapower labels in table order; PGM rows are in the same order).
        self.bus_index = net.bus.index.to_numpy()
        self.line_index = net.line.index.to_numpy()
        self.trafo_index = net.trafo.index.to_numpy()
        self.load_index = net.load.index.to_numpy()
        self.sgen_index = net.sgen.index.to_numpy()
        self.storage_index = net.storage.index.to_numpy()
        self.ext_grid_index = net.ext_grid.index.to_numpy()
        for ct, n in (
            (CT.node, len(net.bus)),
            (CT.line, len(net.line)),
            (CT.transformer, len(net.trafo)),
            (CT.sym_gen, len(net.sgen)),
            (CT.source, len(net.ext_grid)),
        ):
            have = len(inp.get(ct, ()))
            if have != n:
                raise RuntimeError(f"converter produced {have} {ct} rows for {n} pandapower elements")
        self._u_rated_kv = net.bus.vn_kv.to_numpy(dtype=float)
        tr = net.trafo
        self._trafo_vn = np.vstack([_float_col(tr, "vn_hv_kv", np.nan), _float_col(tr, "vn_lv_kv", np.nan)])
        self._trafo_rating = (
            _float_col(tr, "sn_mva", np.nan) * _float_col(tr, "parallel", 1.0) * _float_col(tr, "df", 1.0)
        )
        self._prepare_switches()

    # ------------------------------------------------------------------------------------ switches
    def _prepare_switches(self) -> None:
        """Incidence of switches on branch ends, to turn per-step switch states into branch statuses."""
        import scipy.sparse as sp

        net, CT = self.net, self._CT
        sw = net.switch
        self.switch_index = sw.index.to_numpy()
        n_sw = len(sw)
        et = sw.et.to_numpy(dtype=object) if n_sw else np.array([], dtype=object)
        bus = sw.bus.to_numpy(dtype=np.int64) if n_sw else np.array([], dtype=np.int64)
        el = sw.element.to_numpy(dtype=np.int64) if n_sw else np.array([], dtype=np.int64)
        self._branch = {}
        for table, ct, ends in (
            ("line", CT.line, ("from_bus", "to_bus")),
            ("trafo", CT.transformer, ("hv_bus", "lv_bus")),
        ):
            tab = net[table]
            if len(tab) == 0:
                continue
            pos = pd.Series(np.arange(len(tab)), index=tab.index)
            code = "l" if table == "line" else "t"
            rows, cols, sides = [], [], []
            for k in np.flatnonzero(et == code):
                if el[k] not in pos.index:
                    continue
                p = int(pos[el[k]])
                for side, end in enumerate(ends):
                    if int(tab[end].iloc[p]) == bus[k]:
                        rows.append(k)
                        cols.append(p)
                        sides.append(side)
            if not rows:
                continue
            rows, cols, sides = map(np.asarray, (rows, cols, sides))
            touched = np.unique(cols)
            local = np.searchsorted(touched, cols)
            inc = [
                sp.csr_matrix(
                    (np.ones(int(np.sum(sides == s))), (rows[sides == s], local[sides == s])),
                    shape=(n_sw, len(touched)),
                )
                for s in (0, 1)
            ]
            in_service = tab.in_service.astype(bool).to_numpy()[touched]
            self._branch[ct] = (self._input[ct]["id"][touched], in_service, inc)
        link_sw = np.flatnonzero(et == "b")
        self._links = (
            (self._input[CT.link]["id"], link_sw) if len(link_sw) and CT.link in self._input else None
        )

    def _switch_update(self, closed: np.ndarray) -> dict:
        n = closed.shape[0]
        open_ = (~closed).astype(np.float64)
        upd = {}
        for ct, (ids, in_service, (inc_from, inc_to)) in self._branch.items():
            arr = self._init_update(ct, (n, len(ids)))
            arr["id"] = ids[None, :]
            arr["from_status"] = (in_service[None, :] & (np.asarray(open_ @ inc_from) == 0)).astype(np.int8)
            arr["to_status"] = (in_service[None, :] & (np.asarray(open_ @ inc_to) == 0)).astype(np.int8)
            upd[ct] = arr
        if self._links is not None:
            ids, cols = self._links
            arr = self._init_update(self._CT.link, (n, len(ids)))
            arr["id"] = ids[None, :]
            st = closed[:, cols].astype(np.int8)
            arr["from_status"] = st
            arr["to_status"] = st
            upd[self._CT.link] = arr
        return upd

    # --------------------------------------------------------------------------------------- solve
    def solve(self, inj: Injections, switch_closed: np.ndarray | None = None) -> States:
        """Power flow at every instant of ``inj``; ``switch_closed`` (n_times, n_switch) in ``net.switch``
        order overrides the switch states per instant (``None``: the states of ``net.switch.closed``)."""
        CT = self._CT
        n = len(inj.times)
        for name, arr, width in (
            ("load_p_mw", inj.load_p_mw, len(self.load_index)),
            ("sgen_p_mw", inj.sgen_p_mw, len(self.sgen_index)),
            ("storage_p_mw", inj.storage_p_mw, len(self.storage_index)),
        ):
            if np.shape(arr) != (n, width):
                raise ValueError(f"{name} has shape {np.shape(arr)}, expected {(n, width)}")
        if n == 0:
            return self._empty(inj.times)

        upd = {}
        sym_in = self._input[CT.sym_load]
        loads = self._init_update(CT.sym_load, (n, len(sym_in)))
        loads["id"] = sym_in["id"][None, :]
        for rows, fp, fq in self._load_blocks:
            loads["p_specified"][:, rows] = inj.load_p_mw * (fp * 1e6)[None, :]
            loads["q_specified"][:, rows] = inj.load_q_mvar * (fq * 1e6)[None, :]
        loads["p_specified"][:, self._storage_rows] = inj.storage_p_mw * 1e6
        loads["q_specified"][:, self._storage_rows] = inj.storage_q_mvar * 1e6
        upd[CT.sym_load] = loads
        if len(self.sgen_index):
            gens = self._init_update(CT.sym_gen, (n, len(self.sgen_index)))
            gens["id"] = self._input[CT.sym_gen]["id"][None, :]
            gens["p_specified"] = inj.sgen_p_mw * 1e6
            gens["q_specified"] = inj.sgen_q_mvar * 1e6
            upd[CT.sym_gen] = gens
        if switch_closed is not None:
            closed = np.asarray(switch_closed, dtype=bool)
            if closed.shape != (n, len(self.switch_index)):
                raise ValueError(
                    f"switch_closed has shape {closed.shape}, expected {(n, len(self.switch_index))}"
                )
            upd.update(self._switch_update(closed))

        out_types = {
            CT.node: ["energized", "u_pu", "u", "u_angle"],
            CT.line: ["p_from", "q_from", "i_from", "p_to", "q_to", "i_to", "loading"],
            CT.transformer: ["p_from", "q_from", "i_from", "p_to", "q_to", "i_to"],
            CT.sym_load: ["p", "q"],
            CT.sym_gen: ["p", "q"],
            CT.source: ["p", "q"],
        }
        out_types = {ct: a for ct, a in out_types.items() if ct in self._input}
        res = self._model.calculate_power_flow(
            update_data=upd,
            error_tolerance=self.error_tolerance,
            max_iterations=self.max_iterations,
            threading=self.threading,
            output_component_types=out_types,
            continue_on_batch_error=True,
        )
        converged = np.ones(n, dtype=bool)
        err = self._model.batch_error
        if err is not None:
            converged[np.asarray(err.failed_scenarios, dtype=np.int64)] = False
            log.warning(
                "power flow failed for %d of %d steps: %s",
                int((~converged).sum()),
                n,
                err.error_messages[0] if err.error_messages else "",
            )
        return self._states(inj.times, res, converged)

    # ------------------------------------------------------------------------------------- results
    def _states(self, times, res, converged) -> States:
        CT = self._CT
        bad = ~converged

        def get(ct, attr, scale, width):
            if ct not in res:
                return np.zeros((len(times), width))
            a = np.array(res[ct][attr], dtype=np.float64).reshape(len(times), -1) * scale
            a[bad] = np.nan
            return a

        nb, nl, nt = len(self.bus_index), len(self.line_index), len(self.trafo_index)
        energized = get(CT.node, "energized", 1.0, nb)
        u_pu = get(CT.node, "u_pu", 1.0, nb)
        dead = energized == 0
        u_pu[dead] = np.nan
        angle = get(CT.node, "u_angle", 1.0, nb)
        angle[dead] = np.nan
        u_kv = get(CT.node, "u", 1e-3, nb)
        u_kv[dead] = np.nan

        tr = {
            k: get(CT.transformer, k, s, nt)
            for k, s in (
                ("p_from", 1e-6),
                ("q_from", 1e-6),
                ("i_from", 1e-3),
                ("p_to", 1e-6),
                ("q_to", 1e-6),
                ("i_to", 1e-3),
            )
        }
        with np.errstate(invalid="ignore", divide="ignore"):
            tr_load = (
                np.fmax(tr["i_from"] * self._trafo_vn[0], tr["i_to"] * self._trafo_vn[1])
                * math.sqrt(3)
                / self._trafo_rating
                * 100.0
            )
        tr_load[bad] = np.nan

        sym_p = get(CT.sym_load, "p", 1e-6, 0)
        sym_q = get(CT.sym_load, "q", 1e-6, 0)
        nload = len(self.load_index)
        load_p = np.zeros((len(times), nload))
        load_q = np.zeros((len(times), nload))
        for rows, _, _ in self._load_blocks:
            load_p += sym_p[:, rows]
            load_q += sym_q[:, rows]

        return States(
            times=times,
            converged=converged,
            bus_index=self.bus_index,
            line_index=self.line_index,
            trafo_index=self.trafo_index,
            load_index=self.load_index,
            sgen_index=self.sgen_index,
            storage_index=self.storage_index,
            ext_grid_index=self.ext_grid_index,
            bus_u_pu=u_pu,
            bus_u_angle_rad=angle,
            bus_u_kv=u_kv,
            line_p_from_mw=get(CT.line, "p_from", 1e-6, nl),
            line_q_from_mvar=get(CT.line, "q_from", 1e-6, nl),
            line_i_from_ka=get(CT.line, "i_from", 1e-3, nl),
            line_p_to_mw=get(CT.line, "p_to", 1e-6, nl),
            line_q_to_mvar=get(CT.line, "q_to", 1e-6, nl),
            line_i_to_ka=get(CT.line, "i_to", 1e-3, nl),
            line_loading_percent=get(CT.line, "loading", 100.0, nl),
            trafo_p_hv_mw=tr["p_from"],
            trafo_q_hv_mvar=tr["q_from"],
            trafo_i_hv_ka=tr["i_from"],
            trafo_p_lv_mw=tr["p_to"],
            trafo_q_lv_mvar=tr["q_to"],
            trafo_i_lv_ka=tr["i_to"],
            trafo_loading_percent=tr_load,
            load_p_mw=load_p,
            load_q_mvar=load_q,
            sgen_p_mw=get(CT.sym_gen, "p", 1e-6, len(self.sgen_index)),
            sgen_q_mvar=get(CT.sym_gen, "q", 1e-6, len(self.sgen_index)),
            storage_p_mw=sym_p[:, self._storage_rows],
            storage_q_mvar=sym_q[:, self._storage_rows],
            ext_grid_p_mw=get(CT.source, "p", 1e-6, len(self.ext_grid_index)),
            ext_grid_q_mvar=get(CT.source, "q", 1e-6, len(self.ext_grid_index)),
        )

    def _empty(self, times) -> States:
        def z(w):
            return np.zeros((0, w))

        nb, nl, nt = len(self.bus_index), len(self.line_index), len(self.trafo_index)
        nld, ns, nst, ne = (
            len(self.load_index),
            len(self.sgen_index),
            len(self.storage_index),
            len(self.ext_grid_index),
        )
        return States(
            times=times,
            converged=np.zeros(0, dtype=bool),
            bus_index=self.bus_index,
            line_index=self.line_index,
            trafo_index=self.trafo_index,
            load_index=self.load_index,
            sgen_index=self.sgen_index,
            storage_index=self.storage_index,
            ext_grid_index=self.ext_grid_index,
            bus_u_pu=z(nb),
            bus_u_angle_rad=z(nb),
            bus_u_kv=z(nb),
            line_p_from_mw=z(nl),
            line_q_from_mvar=z(nl),
            line_i_from_ka=z(nl),
            line_p_to_mw=z(nl),
            line_q_to_mvar=z(nl),
            line_i_to_ka=z(nl),
            line_loading_percent=z(nl),
            trafo_p_hv_mw=z(nt),
            trafo_q_hv_mvar=z(nt),
            trafo_i_hv_ka=z(nt),
            trafo_p_lv_mw=z(nt),
            trafo_q_lv_mvar=z(nt),
            trafo_i_lv_ka=z(nt),
            trafo_loading_percent=z(nt),
            load_p_mw=z(nld),
            load_q_mvar=z(nld),
            sgen_p_mw=z(ns),
            sgen_q_mvar=z(ns),
            storage_p_mw=z(nst),
            storage_q_mvar=z(nst),
            ext_grid_p_mw=z(ne),
            ext_grid_q_mvar=z(ne),
        )
