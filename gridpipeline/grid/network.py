"""Network import/export and the pandapower -> power-grid-model conversion.

``load_network(source)`` reads a pandapower JSON file, a SimBench code, a MATPOWER case (``.m`` text
or ``.mat``) or the name of a pandapower test case (``case9``) and returns a pandapower net whose
known data quirks are repaired (see ``sanitize_net``).

``to_pgm(net)`` builds power-grid-model input arrays together with the id maps between pandapower
``(table, index)`` and PGM ids. The conversion follows pandapower's own electrical model so that a
PGM power flow equals ``pandapower.runpp`` (lines as pi sections, transformers as pi models with the
magnetising admittance split over both sides, ratio taps only where pandapower applies them, i.e.
``tap_changer_type`` "Ratio"/"Symmetrical" without a phase step, ext_grids as ideal sources).
Elements PGM cannot represent are listed in ``PgmModel.unsupported``; voltage-controlled generators
(``net.gen``) are carried as plain ``sym_gen`` injections (fine for state estimation) and listed in
``PgmModel.voltage_controlled`` so that a power flow is routed to pandapower instead.

``network_tables(net)`` gives flat, typed tables of the model for storage (e.g. in DuckDB).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from power_grid_model import (
    ComponentType,
    LoadGenType,
    WindingType,
    initialize_array,
)

SQRT3 = math.sqrt(3.0)
#: Short-circuit power given to PGM sources so they behave like pandapower's ideal ext_grid.
SOURCE_SK_VA = 1e20

#: Element tables converted to PGM appliances: table -> (component, sign of pandapower p in the
#: component's reference direction). Loads and storage consume (sym_load: consumption positive),
#: sgen and gen generate (sym_gen: generation positive), ext_grid supplies (source: into the node).
APPLIANCE_TABLES: dict[str, ComponentType] = {
    "load": ComponentType.sym_load,
    "storage": ComponentType.sym_load,
    "sgen": ComponentType.sym_gen,
    "gen": ComponentType.sym_gen,
    "ext_grid": ComponentType.source,
    "shunt": ComponentType.shunt,
}
BRANCH_TABLES: dict[str, ComponentType] = {
    "line": ComponentType.line,
    "trafo": ComponentType.transformer,
    "switch": ComponentType.link,
}
#: Tables pandapower may hold that this converter does not represent in PGM.
UNSUPPORTED_TABLES = (
    "trafo3w", "impedance", "ward", "xward", "dcline", "asymmetric_load", "asymmetric_sgen", "motor",
    "svc", "tcsc", "ssc", "vsc", "source_dc", "line_dc",
)
ZIP_COLUMNS = ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent",
               "const_z_percent", "const_i_percent")


class NetworkFormatError(ValueError):
    """A network file or code could not be read as a grid model."""


# ------------------------------------------------------------------------------------------ loading
def load_network(source: str | Path, *, f_hz: float = 50.0) -> Any:
    """Read a network and return a sanitised pandapower net.

    ``source`` is one of:
      * a pandapower JSON file (``*.json``);
      * a MATPOWER case file: ``*.m`` (parsed here, no MATLAB needed) or ``*.mat`` (scipy);
      * a SimBench code such as ``1-MV-semiurb--0-sw``;
      * a pandapower test case name such as ``case9`` or ``case_ieee30``.
    Raises ``NetworkFormatError`` with the reason if the source cannot be read.
    """
    import pandapower as pp

    src = str(source)
    path = Path(src)
    suffix = path.suffix.lower()
    if suffix in (".json", ".m", ".mat") or path.exists():
        if not path.exists():
            raise NetworkFormatError(f"network file not found: {path}")
        if suffix == ".json":
            try:
                net = pp.from_json(str(path))
            except Exception as exc:  # pandapower raises many types on bad JSON
                raise NetworkFormatError(f"{path.name}: not a pandapower JSON network ({type(exc).__name__}: "
                                         f"{exc})") from exc
            if not hasattr(net, "bus") or not isinstance(getattr(net, "bus", None), pd.DataFrame):
                raise NetworkFormatError(f"{path.name}: JSON holds no pandapower network (no bus table)")
        elif suffix == ".m":
            ppc = parse_matpower(path.read_text(errors="replace"), name=path.name)
            net = _from_ppc(ppc, f_hz, path.name)
        elif suffix == ".mat":
            net = _from_mat(path, f_hz)
        else:
            raise NetworkFormatError(f"{path.name}: unknown network file type {suffix!r} (expected a .json, .m or "
                                     ".mat file, a SimBench code such as 1-MV-semiurb--0-sw, or a pandapower "
                                     "case name such as case9)")
    elif _looks_like_simbench_code(src):
        import simbench as sb

        try:
            net = sb.get_simbench_net(src)
        except Exception as exc:
            raise NetworkFormatError(f"SimBench code {src!r} could not be loaded: {exc}") from exc
    elif re.fullmatch(r"case[\w]+", src):
        import pandapower.networks as pn

        fn = getattr(pn, src, None)
        if fn is None:
            raise NetworkFormatError(f"unknown pandapower test case {src!r}")
        net = fn()
    else:
        raise NetworkFormatError(f"cannot interpret network source {src!r}: not a file, a SimBench code "
                                 "or a pandapower case name")
    if len(net.bus) == 0:
        raise NetworkFormatError(f"{src}: network has no buses")
    sanitize_net(net)
    return net


def _looks_like_simbench_code(s: str) -> bool:
    return bool(re.fullmatch(r"\d-[A-Za-z]+(-[\w.]*)?-[\w.]*-\d-(sw|no_sw)", s))


def _from_ppc(ppc: dict, f_hz: float, name: str):
    from pandapower.converter.pypower.from_ppc import from_ppc

    try:
        return from_ppc(ppc, f_hz=f_hz, validate_conversion=False)
    except Exception as exc:
        raise NetworkFormatError(f"{name}: MATPOWER data could not be converted ({type(exc).__name__}: "
                                 f"{exc})") from exc


def _from_mat(path: Path, f_hz: float):
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as exc:
        raise NetworkFormatError(f"{path.name}: not a readable .mat file ({exc})") from exc
    case = next((v for k, v in mat.items() if not k.startswith("__") and hasattr(v, "bus")), None)
    if case is None:
        raise NetworkFormatError(f"{path.name}: no MATPOWER case struct (with a bus field) in the file")
    ppc = {"version": str(getattr(case, "version", "2")), "baseMVA": float(getattr(case, "baseMVA", 100.0))}
    for key in ("bus", "gen", "branch", "gencost"):
        if hasattr(case, key):
            ppc[key] = np.atleast_2d(np.asarray(getattr(case, key), dtype=float))
    _check_ppc(ppc, path.name)
    return _from_ppc(ppc, f_hz, path.name)


# ------------------------------------------------------------------------------- MATPOWER .m text
_MIN_COLS = {"bus": 13, "gen": 10, "branch": 11}


def parse_matpower(text: str, *, name: str = "<text>") -> dict:
    """Parse the matrices of a MATPOWER case file (``mpc.bus = [...];`` etc.) into a ppc dict.

    Handles comments (``%``), ``...`` continuations, ``;``/newline row separators, commas, and
    numbers like ``1e-3``/``Inf``/``NaN``. Only ``baseMVA``, ``version``, ``bus``, ``gen``,
    ``branch`` (required) and ``gencost`` (optional) are read.
    """
    # strip comments but keep string literals such as '2'
    lines = []
    for raw in text.splitlines():
        line = raw
        out, in_str = [], False
        for ch in line:
            if ch == "'":
                in_str = not in_str
            if ch == "%" and not in_str:
                break
            out.append(ch)
        lines.append("".join(out))
    body = "\n".join(lines).replace("...\n", " ")
    m = re.search(r"function\s+(?:\w+\s*=\s*)?(\w+)", body)
    var = None
    if m:
        m2 = re.search(r"function\s+(\w+)\s*=", body)
        var = m2.group(1) if m2 else None
    var = var or "mpc"
    ppc: dict[str, Any] = {"version": "2"}
    mb = re.search(rf"{var}\.baseMVA\s*=\s*([-+0-9.eE]+)\s*;", body)
    if not mb:
        raise NetworkFormatError(f"{name}: no '{var}.baseMVA = <number>;' found: not a MATPOWER case")
    ppc["baseMVA"] = float(mb.group(1))
    mv = re.search(rf"{var}\.version\s*=\s*'(\w+)'", body)
    if mv:
        ppc["version"] = mv.group(1)
    for key in ("bus", "gen", "branch", "gencost"):
        mm = re.search(rf"{var}\.{key}\s*=\s*\[(.*?)\]\s*;", body, flags=re.DOTALL)
        if not mm:
            if key == "gencost":
                continue
            raise NetworkFormatError(f"{name}: matrix '{var}.{key} = [ ... ];' missing or not closed")
        ppc[key] = _parse_matrix(mm.group(1), f"{name}: {var}.{key}")
    _check_ppc(ppc, name)
    return ppc


def _parse_matrix(block: str, what: str) -> np.ndarray:
    rows = []
    for chunk in re.split(r"[;\n]", block):
        toks = [t for t in re.split(r"[\s,]+", chunk.strip()) if t]
        if not toks:
            continue
        vals = []
        for t in toks:
            tl = t.lower()
            if tl in ("inf", "+inf"):
                vals.append(np.inf)
            elif tl == "-inf":
                vals.append(-np.inf)
            elif tl == "nan":
                vals.append(np.nan)
            else:
                try:
                    vals.append(float(t))
                except ValueError:
                    raise NetworkFormatError(f"{what}: {t!r} is not a number") from None
        rows.append(vals)
    if not rows:
        raise NetworkFormatError(f"{what}: empty matrix")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise NetworkFormatError(f"{what}: rows have different lengths {sorted(widths)}")
    return np.array(rows, dtype=float)


def _check_ppc(ppc: dict, name: str) -> None:
    for key, ncol in _MIN_COLS.items():
        arr = ppc.get(key)
        if arr is None:
            raise NetworkFormatError(f"{name}: matrix {key!r} missing")
        if arr.ndim != 2 or arr.shape[1] < ncol:
            raise NetworkFormatError(f"{name}: {key} matrix needs at least {ncol} columns, has "
                                     f"{arr.shape[1] if arr.ndim == 2 else arr.ndim}")
    bus_ids = set(ppc["bus"][:, 0].astype(int))
    if len(bus_ids) != len(ppc["bus"]):
        raise NetworkFormatError(f"{name}: duplicate bus numbers")
    for key, cols in (("branch", (0, 1)), ("gen", (0,))):
        for c in cols:
            bad = set(ppc[key][:, c].astype(int)) - bus_ids
            if bad:
                raise NetworkFormatError(f"{name}: {key} refers to unknown bus(es) {sorted(bad)[:5]}")
    if not np.isin(ppc["bus"][:, 1].astype(int), [1, 2, 3, 4]).all():
        raise NetworkFormatError(f"{name}: bus types must be 1..4")
    if not (ppc["bus"][:, 1].astype(int) == 3).any():
        raise NetworkFormatError(f"{name}: no reference (type 3) bus")


def to_matpower_m(net, path: str | Path, *, name: str = "case") -> Path:
    """Write ``net`` as a MATPOWER ``.m`` case (via pandapower's ``to_ppc``)."""
    from pandapower.converter.pypower.to_ppc import to_ppc

    ppc = to_ppc(net, init="flat", calculate_voltage_angles=True)
    path = Path(path)

    def mat(a: np.ndarray, ncol: int) -> str:
        a = np.real(np.asarray(a))[:, :ncol]
        return "\n".join("\t" + "\t".join(f"{v:.12g}" for v in row) + ";" for row in a)

    text = (
        f"function mpc = {name}\n%% written by gridpipeline\nmpc.version = '2';\n"
        f"mpc.baseMVA = {float(ppc['baseMVA']):.12g};\n\n"
        f"%% bus data\nmpc.bus = [\n{mat(ppc['bus'], 13)}\n];\n\n"
        f"%% generator data\nmpc.gen = [\n{mat(ppc['gen'], 21 if ppc['gen'].shape[1] >= 21 else 10)}\n];\n\n"
        f"%% branch data\nmpc.branch = [\n{mat(ppc['branch'], 13)}\n];\n"
    )
    path.write_text(text)
    return path


def save_network(net, path: str | Path) -> Path:
    """Write ``net`` as pandapower JSON (``.json``) or MATPOWER text (``.m``)."""
    import pandapower as pp

    path = Path(path)
    if path.suffix.lower() == ".m":
        return to_matpower_m(net, path, name=re.sub(r"\W", "_", path.stem) or "case")
    pp.to_json(net, str(path))
    return path


# ------------------------------------------------------------------------------------ sanitising
def _clock_of(shift_degree) -> int:
    try:
        s = float(shift_degree)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(s):
        return 0
    return int(round(s / 30.0)) % 12


def default_vector_group(shift_degree) -> str:
    """A vector group consistent with a phase shift: Dyn<k> for odd clocks, YNyn<k> for even ones."""
    k = _clock_of(shift_degree)
    return f"Dyn{k}" if k % 2 else f"YNyn{k}"


def sanitize_net(net) -> Any:
    """Repair known data quirks in place (semantically neutral) and return ``net``.

    * NaN ZIP shares of loads (simbench 1.6.1 under pandapower 3.3) -> 0: constant power;
    * missing/None ``trafo.vector_group`` -> derived from ``shift_degree`` (Dyn5 for 150 degrees);
    * NaN ``scaling``/``df``/``parallel`` -> 1.
    """
    if len(net.load):
        for col in ZIP_COLUMNS:
            if col in net.load.columns:
                net.load[col] = pd.to_numeric(net.load[col], errors="coerce").fillna(0.0).astype(float)
    for table in ("load", "sgen", "storage", "gen"):
        df = net[table] if table in net else None
        if df is not None and len(df) and "scaling" in df.columns:
            df["scaling"] = pd.to_numeric(df["scaling"], errors="coerce").fillna(1.0)
    if len(net.trafo):
        if "vector_group" not in net.trafo.columns:
            net.trafo["vector_group"] = None
        vg = net.trafo["vector_group"].astype(object)
        missing = vg.isna() | (vg.astype(str).str.strip() == "") | (vg.astype(str) == "None")
        if missing.any():
            net.trafo.loc[missing, "vector_group"] = [default_vector_group(s) for s in
                                                      net.trafo.loc[missing, "shift_degree"]]
        for col in ("df", "parallel"):
            if col in net.trafo.columns:
                net.trafo[col] = pd.to_numeric(net.trafo[col], errors="coerce").fillna(1)
    if len(net.line):
        for col in ("df", "parallel"):
            if col in net.line.columns:
                net.line[col] = pd.to_numeric(net.line[col], errors="coerce").fillna(1)
    return net


def has_voltage_controlled(net) -> bool:
    """True if the net has in-service voltage-controlled generators (PV buses), which PGM lacks."""
    gen = net["gen"] if "gen" in net else None
    return gen is not None and len(gen) > 0 and bool(gen["in_service"].astype(bool).any())


def unsupported_elements(net) -> list[str]:
    """Why ``to_pgm`` cannot represent ``net`` faithfully for a power flow (empty list: it can)."""
    reasons = []
    for t in UNSUPPORTED_TABLES:
        if t in net and isinstance(net[t], pd.DataFrame) and len(net[t]):
            live = net[t]["in_service"].astype(bool).any() if "in_service" in net[t].columns else True
            if live:
                reasons.append(f"{t} ({len(net[t])} elements) not represented in power-grid-model")
    if len(net.trafo):
        step_deg = _num(net.trafo, "tap_step_degree", 0.0)
        ctype = net.trafo["tap_changer_type"] if "tap_changer_type" in net.trafo.columns else \
            pd.Series(None, index=net.trafo.index)
        diff = _num(net.trafo, "tap_pos", 0.0) - _num(net.trafo, "tap_neutral", 0.0)
        shifting = (ctype.isin(["Ideal"]) | ((step_deg != 0) & ctype.isin(["Ratio", "Symmetrical"]))) & (diff != 0)
        if shifting.any():
            reasons.append(f"{int(shifting.sum())} phase-shifting tap changer(s)")
        if "tap_dependency_table" in net.trafo.columns and \
                net.trafo["tap_dependency_table"].fillna(False).astype(bool).any():
            reasons.append("transformer tap dependency tables")
        clock = net.trafo["shift_degree"].astype(float).fillna(0.0) / 30.0
        if (np.abs(clock - np.round(clock)) > 1e-9).any():
            reasons.append("transformer phase shift not a multiple of 30 degrees")
    if len(net.line):
        vf = net.bus.vn_kv.reindex(net.line.from_bus).to_numpy()
        vt = net.bus.vn_kv.reindex(net.line.to_bus).to_numpy()
        if (np.abs(vf - vt) > 1e-9).any():
            reasons.append("line(s) between buses of different rated voltage")
    if len(net.trafo) and (_num(net.trafo, "vk_percent", 0.0) >= 100).any():
        reasons.append("transformer vk_percent >= 100 % (power-grid-model needs uk < 1)")
    if "switch" in net and len(net.switch) and "z_ohm" in net.switch.columns:
        if ((net.switch.et == "b") & net.switch.closed.astype(bool) & (_num(net.switch, "z_ohm", 0.0) > 0)).any():
            reasons.append("bus-bus switches with impedance")
    return reasons


def _num(df: pd.DataFrame, col: str, default: float) -> pd.Series:
    if col in df.columns:
        return pd.to_numeric(df[col], errors="coerce").fillna(default).astype(float)
    return pd.Series(default, index=df.index, dtype=float)


def _bool(df: pd.DataFrame, col: str, default: bool = True) -> np.ndarray:
    if col in df.columns:
        return df[col].fillna(default).astype(bool).to_numpy()
    return np.full(len(df), default, dtype=bool)


# ------------------------------------------------------------------------------------ PGM model
_WINDING = {"YN": WindingType.wye_n, "Y": WindingType.wye, "D": WindingType.delta,
            "ZN": WindingType.zigzag_n, "Z": WindingType.zigzag}


def _windings(vector_group: Any, clock: int) -> tuple[int, int]:
    """Winding types from a vector group like 'Dyn5'/'YNd11'; consistent with the clock."""
    s = str(vector_group or "")
    m = re.fullmatch(r"(YN|Y|D|ZN|Z)(yn|y|d|zn|z)\d*", s.strip())
    if m:
        w1, w2 = _WINDING[m.group(1)], _WINDING[m.group(2).upper()]
        # PGM: Y/Y and D/D types need even clocks, mixed types odd ones (zigzag accepts both)
        star = (WindingType.wye, WindingType.wye_n)
        same = (w1 in star and w2 in star) or (w1 == WindingType.delta and w2 == WindingType.delta)
        mixed = (w1 in star and w2 == WindingType.delta) or (w1 == WindingType.delta and w2 in star)
        if (same and clock % 2 == 0) or (mixed and clock % 2 == 1) or not (same or mixed):
            return int(w1), int(w2)
    if clock % 2:
        return int(WindingType.delta), int(WindingType.wye_n)
    return int(WindingType.wye_n), int(WindingType.wye_n)


@dataclass
class PgmModel:
    """power-grid-model input for a pandapower net, with the id maps both ways.

    * ``input``: component -> PGM input array (ids are 0..n_ids-1, unique over all components);
    * ``ids[table]``: Series pandapower index -> PGM id, for ``bus``, ``line``, ``trafo``, ``switch``
      (bus-bus switches, as links), ``ext_grid``, ``load``, ``sgen``, ``storage``, ``gen``, ``shunt``;
    * ``id_table``/``id_index``: for a PGM id, its pandapower table and index (``pp_of``);
    * ``switch_map``: every pandapower switch with the PGM branch it acts on (component, id, side);
    * ``voltage_controlled``: gen indices carried as plain injections; ``unsupported``: reasons why a
      PGM power flow would differ from pandapower's (empty if none).
    """

    input: dict
    ids: dict[str, pd.Series]
    id_table: np.ndarray
    id_index: np.ndarray
    switch_map: pd.DataFrame
    bus_vn_kv: pd.Series
    line_i_n: pd.Series
    trafo_rating: pd.DataFrame
    voltage_controlled: list[int] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    frequency: float = 50.0
    #: per appliance PGM id: table, element_id, p_mw, q_mvar (scaling applied, pandapower sign), sn_mva
    appliances: pd.DataFrame = field(default_factory=pd.DataFrame)
    _base_status: dict = field(default_factory=dict, repr=False)

    @property
    def n_ids(self) -> int:
        return len(self.id_table)

    def pgm_id(self, table: str, index) -> np.ndarray:
        """PGM ids of pandapower ``(table, index)`` (scalar or array)."""
        return self.ids[table].reindex(np.atleast_1d(index)).to_numpy()

    def pp_of(self, pgm_ids) -> tuple[np.ndarray, np.ndarray]:
        """(table names, pandapower indices) of PGM ids."""
        a = np.asarray(pgm_ids, dtype=np.int64)
        return self.id_table[a], self.id_index[a]

    def component_of(self, table: str) -> ComponentType:
        if table in APPLIANCE_TABLES:
            return APPLIANCE_TABLES[table]
        if table in BRANCH_TABLES:
            return BRANCH_TABLES[table]
        if table == "bus":
            return ComponentType.node
        raise KeyError(table)

    def rows_of(self, component: ComponentType, pgm_ids) -> np.ndarray:
        """Row positions of ``pgm_ids`` in ``input[component]`` (ids are sorted within a component)."""
        ids = self.input[component]["id"]
        return np.searchsorted(ids, np.asarray(pgm_ids))

    def branch_statuses(self, switch_closed: Mapping | pd.Series | None = None) -> dict:
        """Branch status arrays (line, transformer, link) for given switch states (None: the net's)."""
        return _branch_statuses(self, switch_closed)

    def with_switch_states(self, switch_closed: Mapping | pd.Series | None) -> dict:
        """A copy of ``input`` with the branch statuses implied by ``switch_closed`` applied."""
        data = dict(self.input)
        if switch_closed is None:
            return data
        st = self.branch_statuses(switch_closed)
        for comp, (fs, ts) in st.items():
            arr = self.input[comp].copy()
            arr["from_status"] = fs
            arr["to_status"] = ts
            data[comp] = arr
        return data


def closed_series(net_switch: pd.DataFrame, override: Mapping | pd.Series | None) -> pd.Series:
    closed = net_switch["closed"].astype(bool).copy() if len(net_switch) else pd.Series(dtype=bool)
    if override is None:
        return closed
    ov = pd.Series(override) if not isinstance(override, pd.Series) else override
    ov = ov[~ov.index.duplicated(keep="last")]
    ov = ov[ov.index.isin(closed.index)]
    vals = pd.to_numeric(ov.map(lambda v: int(v) if isinstance(v, (bool, np.bool_)) else v), errors="coerce")
    ok = vals.isin([0, 1])
    closed.loc[vals.index[ok]] = vals[ok].astype(int).astype(bool).to_numpy()
    return closed


def _branch_statuses(model: PgmModel, switch_closed) -> dict:
    sm = model.switch_map
    out = {}
    base = {c: (model.input[c]["from_status"].astype(np.int8).copy(),
                model.input[c]["to_status"].astype(np.int8).copy())
            for c in (ComponentType.line, ComponentType.transformer, ComponentType.link)
            if c in model.input}
    # base statuses without the switches: stored in switch_map's companion columns
    for comp, (fs, ts) in base.items():
        fs[:] = model._base_status[comp][0]
        ts[:] = model._base_status[comp][1]
    if len(sm):
        closed = closed_series(sm.rename(columns={"closed_default": "closed"}), switch_closed)
        for comp in base:
            sub = sm[sm.component == comp.value]
            if not len(sub):
                continue
            rows = model.rows_of(comp, sub.pgm_id.to_numpy())
            c = closed.reindex(sub.index).to_numpy().astype(bool)
            fs, ts = base[comp]
            side = sub.side.to_numpy()
            open_from = rows[(side != "to") & ~c]
            open_to = rows[(side != "from") & ~c]
            fs[open_from] = 0
            ts[open_to] = 0
    for comp, (fs, ts) in base.items():
        out[comp] = (fs, ts)
    return out


def to_pgm(net, *, frequency: float | None = None) -> PgmModel:
    """Convert a pandapower net to power-grid-model input with id maps (see ``PgmModel``)."""
    sanitize_net(net)
    f_hz = float(frequency or net.get("f_hz", 50.0) or 50.0)
    next_id = 0
    ids: dict[str, pd.Series] = {}
    tables: list[tuple[str, np.ndarray]] = []

    def alloc(table: str, index: pd.Index) -> np.ndarray:
        nonlocal next_id
        arr = np.arange(next_id, next_id + len(index), dtype=np.int32)
        next_id += len(index)
        ids[table] = pd.Series(arr, index=index.to_numpy(), name=table)
        tables.append((table, index.to_numpy()))
        return arr

    data: dict = {}
    bus = net.bus
    bus_ok = pd.Series(_bool(bus, "in_service"), index=bus.index)
    node = initialize_array("input", ComponentType.node, len(bus))
    node["id"] = alloc("bus", bus.index)
    node["u_rated"] = bus.vn_kv.astype(float).to_numpy() * 1e3
    data[ComponentType.node] = node
    nid = ids["bus"]

    switch = net.switch if "switch" in net else pd.DataFrame(columns=["bus", "element", "et", "closed"])
    sw_rows = []

    # lines
    line = net.line
    arr = initialize_array("input", ComponentType.line, len(line))
    arr["id"] = alloc("line", line.index)
    if len(line):
        length = _num(line, "length_km", 0.0).to_numpy()
        par = _num(line, "parallel", 1.0).to_numpy()
        c = _num(line, "c_nf_per_km", 0.0).to_numpy()
        g = _num(line, "g_us_per_km", 0.0).to_numpy()
        arr["from_node"] = nid.reindex(line.from_bus).to_numpy()
        arr["to_node"] = nid.reindex(line.to_bus).to_numpy()
        ok = _bool(line, "in_service") & bus_ok.reindex(line.from_bus).to_numpy() & \
            bus_ok.reindex(line.to_bus).to_numpy()
        arr["from_status"] = ok
        arr["to_status"] = ok
        arr["r1"] = _num(line, "r_ohm_per_km", 0.0).to_numpy() * length / par
        arr["x1"] = _num(line, "x_ohm_per_km", 0.0).to_numpy() * length / par
        arr["c1"] = c * length * par * 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            arr["tan1"] = np.where(c > 0, g / (c * 2 * np.pi * f_hz * 1e-3), 0.0)
        arr["i_n"] = _num(line, "max_i_ka", np.nan).to_numpy() * 1e3 * _num(line, "df", 1.0).to_numpy() * par
        for col, src in (("r0", "r0_ohm_per_km"), ("x0", "x0_ohm_per_km")):
            if src in line.columns:
                arr[col] = _num(line, src, np.nan).to_numpy() * length / par
    data[ComponentType.line] = arr
    if len(switch):
        ls = switch[switch.et == "l"]
        ls = ls[ls.element.isin(line.index)]
        if len(ls):
            fb = line.from_bus.reindex(ls.element).to_numpy()
            side = np.where(ls.bus.to_numpy() == fb, "from", "to")
            sw_rows.append(pd.DataFrame({"component": ComponentType.line.value,
                                         "pgm_id": ids["line"].reindex(ls.element).to_numpy(),
                                         "side": side, "closed_default": ls.closed.astype(bool).to_numpy()},
                                        index=ls.index))

    # transformers
    trafo = net.trafo
    arr = initialize_array("input", ComponentType.transformer, len(trafo))
    arr["id"] = alloc("trafo", trafo.index)
    if len(trafo):
        par = _num(trafo, "parallel", 1.0).to_numpy()
        sn = _num(trafo, "sn_mva", np.nan).to_numpy()
        vn_hv = _num(trafo, "vn_hv_kv", np.nan).to_numpy()
        vn_lv = _num(trafo, "vn_lv_kv", np.nan).to_numpy()
        # ratio taps exactly where pandapower 3 applies them
        ctype = trafo["tap_changer_type"] if "tap_changer_type" in trafo.columns else \
            pd.Series(None, index=trafo.index)
        diff = (_num(trafo, "tap_pos", 0.0) - _num(trafo, "tap_neutral", 0.0)).to_numpy()
        step = _num(trafo, "tap_step_percent", 0.0).to_numpy()
        apply = ctype.isin(["Ratio", "Symmetrical"]).to_numpy() & np.isfinite(diff) & (diff != 0)
        side = trafo["tap_side"].astype(object).to_numpy() if "tap_side" in trafo.columns else \
            np.full(len(trafo), None)
        factor = np.where(apply, 1.0 + diff * step / 100.0, 1.0)
        u1 = vn_hv * np.where(side == "hv", factor, 1.0)
        u2 = vn_lv * np.where(side == "lv", factor, 1.0)
        clocks = np.array([_clock_of(s) for s in trafo["shift_degree"]], dtype=np.int8)
        vg = trafo["vector_group"] if "vector_group" in trafo.columns else pd.Series(None, index=trafo.index)
        wind = np.array([_windings(v, int(k)) for v, k in zip(vg, clocks)], dtype=np.int8).reshape(-1, 2)
        arr["from_node"] = nid.reindex(trafo.hv_bus).to_numpy()
        arr["to_node"] = nid.reindex(trafo.lv_bus).to_numpy()
        ok = _bool(trafo, "in_service") & bus_ok.reindex(trafo.hv_bus).to_numpy() & \
            bus_ok.reindex(trafo.lv_bus).to_numpy()
        arr["from_status"] = ok
        arr["to_status"] = ok
        arr["u1"] = u1 * 1e3
        arr["u2"] = u2 * 1e3
        arr["sn"] = sn * par * 1e6
        arr["uk"] = _num(trafo, "vk_percent", np.nan).to_numpy() * 1e-2
        arr["pk"] = _num(trafo, "vkr_percent", 0.0).to_numpy() * 1e-2 * sn * par * 1e6
        arr["p0"] = _num(trafo, "pfe_kw", 0.0).to_numpy() * par * 1e3
        i0 = _num(trafo, "i0_percent", 0.0).to_numpy() * 1e-2
        arr["i0"] = np.maximum(i0, arr["p0"] / arr["sn"])
        arr["clock"] = clocks
        arr["winding_from"] = wind[:, 0]
        arr["winding_to"] = wind[:, 1]
        arr["tap_side"] = 0
        arr["tap_pos"] = 0
        arr["tap_nom"] = 0
        arr["tap_min"] = 0
        arr["tap_max"] = 0
        arr["tap_size"] = 0.0
    data[ComponentType.transformer] = arr
    trafo_rating = pd.DataFrame({
        "sn_mva": _num(trafo, "sn_mva", np.nan), "vn_hv_kv": _num(trafo, "vn_hv_kv", np.nan),
        "vn_lv_kv": _num(trafo, "vn_lv_kv", np.nan), "parallel": _num(trafo, "parallel", 1.0),
        "df": _num(trafo, "df", 1.0)}, index=trafo.index)
    if len(switch):
        ts = switch[switch.et == "t"]
        ts = ts[ts.element.isin(trafo.index)]
        if len(ts):
            hb = trafo.hv_bus.reindex(ts.element).to_numpy()
            side = np.where(ts.bus.to_numpy() == hb, "from", "to")
            sw_rows.append(pd.DataFrame({"component": ComponentType.transformer.value,
                                         "pgm_id": ids["trafo"].reindex(ts.element).to_numpy(),
                                         "side": side, "closed_default": ts.closed.astype(bool).to_numpy()},
                                        index=ts.index))

    # bus-bus switches -> links (open ones stay as links with status 0, so they can be closed later)
    bsw = switch[switch.et == "b"] if len(switch) else switch
    arr = initialize_array("input", ComponentType.link, len(bsw))
    arr["id"] = alloc("switch", bsw.index)
    if len(bsw):
        arr["from_node"] = nid.reindex(bsw.bus).to_numpy()
        arr["to_node"] = nid.reindex(bsw.element.astype(int)).to_numpy()
        ok = bus_ok.reindex(bsw.bus).to_numpy() & bus_ok.reindex(bsw.element.astype(int)).to_numpy()
        arr["from_status"] = ok
        arr["to_status"] = ok
        sw_rows.append(pd.DataFrame({"component": ComponentType.link.value, "pgm_id": arr["id"],
                                     "side": "both", "closed_default": bsw.closed.astype(bool).to_numpy()},
                                    index=bsw.index))
    data[ComponentType.link] = arr

    # sources
    eg = net.ext_grid
    arr = initialize_array("input", ComponentType.source, len(eg))
    arr["id"] = alloc("ext_grid", eg.index)
    if len(eg):
        arr["node"] = nid.reindex(eg.bus).to_numpy()
        arr["status"] = _bool(eg, "in_service") & bus_ok.reindex(eg.bus).to_numpy()
        arr["u_ref"] = _num(eg, "vm_pu", 1.0).to_numpy()
        arr["u_ref_angle"] = np.deg2rad(_num(eg, "va_degree", 0.0).to_numpy())
        arr["sk"] = SOURCE_SK_VA
        arr["rx_ratio"] = 0.1
    data[ComponentType.source] = arr

    # appliances: loads (ZIP split only where needed), storage, sgen, gen
    loads_extra = []
    load = net.load
    n_load = len(load)
    arr = initialize_array("input", ComponentType.sym_load, n_load)
    arr["id"] = alloc("load", load.index)
    zip_parts = []
    if n_load:
        sc = _num(load, "scaling", 1.0).to_numpy()
        p = _num(load, "p_mw", 0.0).to_numpy() * sc * 1e6
        q = _num(load, "q_mvar", 0.0).to_numpy() * sc * 1e6
        zp = _num(load, "const_z_p_percent", 0.0).to_numpy() / 100
        ip = _num(load, "const_i_p_percent", 0.0).to_numpy() / 100
        zq = _num(load, "const_z_q_percent", 0.0).to_numpy() / 100
        iq = _num(load, "const_i_q_percent", 0.0).to_numpy() / 100
        if "const_z_p_percent" not in load.columns and "const_z_percent" in load.columns:
            zp = zq = _num(load, "const_z_percent", 0.0).to_numpy() / 100
            ip = iq = _num(load, "const_i_percent", 0.0).to_numpy() / 100
        status = _bool(load, "in_service") & bus_ok.reindex(load.bus).to_numpy()
        arr["node"] = nid.reindex(load.bus).to_numpy()
        arr["status"] = status
        arr["type"] = LoadGenType.const_power
        arr["p_specified"] = p * (1 - zp - ip)
        arr["q_specified"] = q * (1 - zq - iq)
        for kind, fp, fq in ((LoadGenType.const_impedance, zp, zq), (LoadGenType.const_current, ip, iq)):
            sel = (fp != 0) | (fq != 0)
            if sel.any():
                zip_parts.append((kind, sel, p * fp, q * fq, status))
    loads_extra.append(arr)

    storage = net.storage if "storage" in net else pd.DataFrame(columns=["bus", "p_mw", "q_mvar"])
    sarr = initialize_array("input", ComponentType.sym_load, len(storage))
    sarr["id"] = alloc("storage", storage.index)
    if len(storage):
        sc = _num(storage, "scaling", 1.0).to_numpy()
        sarr["node"] = nid.reindex(storage.bus).to_numpy()
        sarr["status"] = _bool(storage, "in_service") & bus_ok.reindex(storage.bus).to_numpy()
        sarr["type"] = LoadGenType.const_power
        sarr["p_specified"] = _num(storage, "p_mw", 0.0).to_numpy() * sc * 1e6
        sarr["q_specified"] = _num(storage, "q_mvar", 0.0).to_numpy() * sc * 1e6

    # extra ZIP parts of loads get their own ids, mapped back to the load
    zip_arrays = []
    for kind, sel, pz, qz, status in zip_parts:
        za = initialize_array("input", ComponentType.sym_load, int(sel.sum()))
        za["id"] = alloc(f"load_{'z' if kind == LoadGenType.const_impedance else 'i'}", load.index[sel])
        za["node"] = nid.reindex(load.bus[sel]).to_numpy()
        za["status"] = status[sel]
        za["type"] = kind
        za["p_specified"] = pz[sel]
        za["q_specified"] = qz[sel]
        zip_arrays.append(za)
    data[ComponentType.sym_load] = np.concatenate([arr, sarr] + zip_arrays)

    sgen = net.sgen
    garr = initialize_array("input", ComponentType.sym_gen, len(sgen))
    garr["id"] = alloc("sgen", sgen.index)
    if len(sgen):
        sc = _num(sgen, "scaling", 1.0).to_numpy()
        garr["node"] = nid.reindex(sgen.bus).to_numpy()
        garr["status"] = _bool(sgen, "in_service") & bus_ok.reindex(sgen.bus).to_numpy()
        garr["type"] = LoadGenType.const_power
        garr["p_specified"] = _num(sgen, "p_mw", 0.0).to_numpy() * sc * 1e6
        garr["q_specified"] = _num(sgen, "q_mvar", 0.0).to_numpy() * sc * 1e6
    gen = net.gen if "gen" in net else pd.DataFrame(columns=["bus", "p_mw"])
    genarr = initialize_array("input", ComponentType.sym_gen, len(gen))
    genarr["id"] = alloc("gen", gen.index)
    vc = []
    if len(gen):
        sc = _num(gen, "scaling", 1.0).to_numpy()
        genarr["node"] = nid.reindex(gen.bus).to_numpy()
        genarr["status"] = _bool(gen, "in_service") & bus_ok.reindex(gen.bus).to_numpy()
        genarr["type"] = LoadGenType.const_power
        genarr["p_specified"] = _num(gen, "p_mw", 0.0).to_numpy() * sc * 1e6
        genarr["q_specified"] = 0.0
        vc = [int(i) for i in gen.index[_bool(gen, "in_service")]]
    data[ComponentType.sym_gen] = np.concatenate([garr, genarr])

    shunt = net.shunt if "shunt" in net else pd.DataFrame(columns=["bus"])
    sharr = initialize_array("input", ComponentType.shunt, len(shunt))
    sharr["id"] = alloc("shunt", shunt.index)
    if len(shunt):
        vn = _num(shunt, "vn_kv", np.nan).to_numpy()
        vn = np.where(np.isfinite(vn), vn, net.bus.vn_kv.reindex(shunt.bus).to_numpy())
        stp = _num(shunt, "step", 1.0).to_numpy()
        g1 = _num(shunt, "p_mw", 0.0).to_numpy() * stp / vn ** 2
        b1 = -_num(shunt, "q_mvar", 0.0).to_numpy() * stp / vn ** 2
        sharr["node"] = nid.reindex(shunt.bus).to_numpy()
        sharr["status"] = _bool(shunt, "in_service") & bus_ok.reindex(shunt.bus).to_numpy()
        sharr["g1"], sharr["b1"], sharr["g0"], sharr["b0"] = g1, b1, g1, b1
    data[ComponentType.shunt] = sharr

    # sort each component by id (allocation order already is) and drop empty components
    data = {k: v for k, v in data.items() if len(v)}
    id_table = np.empty(next_id, dtype=object)
    id_index = np.empty(next_id, dtype=np.int64)
    for table, idx in tables:
        s = ids[table]
        id_table[s.to_numpy()] = table
        id_index[s.to_numpy()] = idx.astype(np.int64)
    app_frames = []
    for table in ("load", "storage", "sgen", "gen"):
        df = net[table] if table in net else None
        if df is None or not len(df):
            continue
        sc = _num(df, "scaling", 1.0)
        app_frames.append(pd.DataFrame({
            "table": table, "element_id": df.index.to_numpy().astype(np.int64),
            "p_mw": (_num(df, "p_mw", 0.0) * sc).to_numpy(),
            "q_mvar": (_num(df, "q_mvar", 0.0) * sc).to_numpy() if table != "gen" else 0.0,
            "sn_mva": _num(df, "sn_mva", np.nan).to_numpy(),
        }, index=pd.Index(ids[table].to_numpy(), name="pgm_id")))
    appliances = pd.concat(app_frames) if app_frames else pd.DataFrame(
        columns=["table", "element_id", "p_mw", "q_mvar", "sn_mva"])
    switch_map = pd.concat(sw_rows) if sw_rows else pd.DataFrame(
        columns=["component", "pgm_id", "side", "closed_default"])
    model = PgmModel(
        input=data, ids=ids, id_table=id_table, id_index=id_index, switch_map=switch_map,
        bus_vn_kv=net.bus.vn_kv.astype(float),
        line_i_n=pd.Series(data[ComponentType.line]["i_n"] if ComponentType.line in data else [],
                           index=line.index, dtype=float),
        trafo_rating=trafo_rating, voltage_controlled=vc, unsupported=unsupported_elements(net),
        frequency=f_hz, appliances=appliances,
    )
    # statuses without switches, then with the net's switch states applied
    model._base_status = {c: (data[c]["from_status"].copy(), data[c]["to_status"].copy())
                          for c in (ComponentType.line, ComponentType.transformer, ComponentType.link)
                          if c in data}
    st = model.branch_statuses(None)
    for comp, (fs, ts) in st.items():
        data[comp]["from_status"] = fs
        data[comp]["to_status"] = ts
    return model


def model_of(net_or_model) -> tuple[Any, PgmModel]:
    """(net or None, PgmModel) from a pandapower net or a ready PgmModel (cached on the net)."""
    if isinstance(net_or_model, PgmModel):
        return None, net_or_model
    net = net_or_model
    return net, to_pgm(net)


# ----------------------------------------------------------------------------------- tables
_TABLE_COLUMNS = {
    "buses": ("bus", ["name", "vn_kv", "type", "zone", "in_service", "subnet", "voltLvl"]),
    "lines": ("line", ["name", "from_bus", "to_bus", "length_km", "r_ohm_per_km", "x_ohm_per_km",
                       "c_nf_per_km", "g_us_per_km", "max_i_ka", "parallel", "df", "type", "std_type",
                       "in_service", "subnet"]),
    "trafos": ("trafo", ["name", "hv_bus", "lv_bus", "sn_mva", "vn_hv_kv", "vn_lv_kv", "vk_percent",
                         "vkr_percent", "pfe_kw", "i0_percent", "shift_degree", "vector_group", "tap_side",
                         "tap_neutral", "tap_min", "tap_max", "tap_step_percent", "tap_pos",
                         "tap_changer_type", "parallel", "df", "in_service", "std_type"]),
    "switches": ("switch", ["name", "bus", "element", "et", "type", "closed", "in_ka"]),
    "loads": ("load", ["name", "bus", "p_mw", "q_mvar", "sn_mva", "scaling", "const_z_p_percent",
                       "const_i_p_percent", "const_z_q_percent", "const_i_q_percent", "in_service",
                       "profile", "type"]),
    "sgens": ("sgen", ["name", "bus", "p_mw", "q_mvar", "sn_mva", "scaling", "type", "in_service",
                       "profile"]),
    "storage": ("storage", ["name", "bus", "p_mw", "q_mvar", "sn_mva", "max_e_mwh", "min_e_mwh",
                            "soc_percent", "scaling", "in_service", "type"]),
    "ext_grids": ("ext_grid", ["name", "bus", "vm_pu", "va_degree", "s_sc_max_mva", "in_service"]),
    "gens": ("gen", ["name", "bus", "p_mw", "vm_pu", "sn_mva", "min_q_mvar", "max_q_mvar", "scaling",
                     "slack", "in_service"]),
    "shunts": ("shunt", ["name", "bus", "p_mw", "q_mvar", "vn_kv", "step", "in_service"]),
}
_STR_COLS = {"name", "type", "zone", "subnet", "std_type", "vector_group", "tap_side", "tap_changer_type",
             "et", "profile"}
_BOOL_COLS = {"in_service", "closed", "slack"}


def network_tables(net) -> dict[str, pd.DataFrame]:
    """Flat, typed tables of the model: buses, lines, trafos, switches, loads, sgens, storage,
    ext_grids (plus gens and shunts when present). Each has ``<singular>_id`` as first column; the
    caller adds ``valid_from``. Object columns are strings, flags booleans, the rest floats/ints."""
    out = {}
    for name, (table, cols) in _TABLE_COLUMNS.items():
        if table not in net or not isinstance(net[table], pd.DataFrame):
            continue
        df = net[table]
        if name in ("gens", "shunts") and not len(df):
            continue
        res = pd.DataFrame(index=df.index)
        for c in cols:
            if c in _STR_COLS:
                res[c] = (df[c].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                                    else str(v)) if c in df.columns else None)
                res[c] = res[c].astype("string")
            elif c in _BOOL_COLS:
                res[c] = df[c].fillna(True).astype(bool) if c in df.columns else True
            elif c in df.columns:
                res[c] = pd.to_numeric(df[c], errors="coerce")
            else:
                res[c] = np.nan
        for c in ("bus", "from_bus", "to_bus", "hv_bus", "lv_bus", "element"):
            if c in res.columns:
                res[c] = res[c].astype("int64")
        idcol = {"buses": "bus_id", "lines": "line_id", "trafos": "trafo_id", "switches": "switch_id",
                 "loads": "load_id", "sgens": "sgen_id", "storage": "storage_id",
                 "ext_grids": "ext_grid_id", "gens": "gen_id", "shunts": "shunt_id"}[name]
        res.insert(0, idcol, df.index.to_numpy().astype("int64"))
        out[name] = res.reset_index(drop=True)
    return out


# --------------------------------------------------------------------------- result tables
def _take(arr: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a PGM output array for ``ids`` (ids absent from the output give a zeroed row and
    False in the mask)."""
    pos = np.searchsorted(arr["id"], ids)
    pos = np.clip(pos, 0, max(len(arr) - 1, 0))
    found = (arr["id"][pos] == ids) if len(arr) else np.zeros(len(ids), bool)
    rows = arr[pos].copy() if len(arr) else np.zeros(len(ids), dtype=arr.dtype)
    if (~found).any():
        for name in rows.dtype.names:
            if rows[name].dtype.kind == "f":
                rows[name][~found] = 0.0
            elif name != "id":
                rows[name][~found] = 0
    return rows, found


def bus_results(model: PgmModel, out: dict) -> pd.DataFrame:
    """Per pandapower bus: u_pu, u_angle_deg, u_kv, energized, from a PGM result (node output)."""
    ids = model.ids["bus"]
    a, found = _take(out[ComponentType.node], ids.to_numpy())
    en = a["energized"].astype(bool) & found
    u_pu = np.where(en, a["u_pu"], np.nan)
    ang = np.where(en, np.degrees(a["u_angle"]), np.nan)
    return pd.DataFrame({"u_pu": u_pu, "u_angle_deg": ang, "u_kv": u_pu * model.bus_vn_kv.reindex(ids.index).to_numpy(),
                         "energized": en}, index=pd.Index(ids.index, name="bus"))


def branch_results(model: PgmModel, out: dict) -> pd.DataFrame:
    """Per line/trafo: flows into the branch at both ends (MW/Mvar, pandapower sign), currents (A),
    losses and loading in percent as pandapower defines it (current based)."""
    frames = []
    for table, comp in (("line", ComponentType.line), ("trafo", ComponentType.transformer)):
        if comp not in out or table not in model.ids or not len(model.ids[table]):
            continue
        ids = model.ids[table]
        a, found = _take(out[comp], ids.to_numpy())
        en = a["energized"].astype(bool) & found
        i_f, i_t = a["i_from"], a["i_to"]
        if table == "line":
            i_n = model.line_i_n.reindex(ids.index).to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                loading = np.maximum(i_f, i_t) / i_n * 100.0
        else:
            r = model.trafo_rating.reindex(ids.index)
            with np.errstate(divide="ignore", invalid="ignore"):
                lhv = i_f * r.vn_hv_kv.to_numpy() * 1e3 * SQRT3 / (r.sn_mva.to_numpy() * 1e6)
                llv = i_t * r.vn_lv_kv.to_numpy() * 1e3 * SQRT3 / (r.sn_mva.to_numpy() * 1e6)
                loading = np.maximum(lhv, llv) * 100.0 / r.parallel.to_numpy() / r["df"].to_numpy()
        frames.append(pd.DataFrame({
            "element_type": table, "element_id": ids.index.to_numpy().astype(np.int64),
            "p_from_mw": a["p_from"] / 1e6, "q_from_mvar": a["q_from"] / 1e6, "i_from_a": i_f,
            "p_to_mw": a["p_to"] / 1e6, "q_to_mvar": a["q_to"] / 1e6, "i_to_a": i_t,
            "pl_mw": (a["p_from"] + a["p_to"]) / 1e6, "ql_mvar": (a["q_from"] + a["q_to"]) / 1e6,
            "loading_percent": np.where(en, loading, 0.0), "energized": en,
        }))
    if not frames:
        return pd.DataFrame(columns=["element_type", "element_id", "p_from_mw", "q_from_mvar", "i_from_a", "p_to_mw",
                                     "q_to_mvar", "i_to_a", "pl_mw", "ql_mvar", "loading_percent", "energized"])
    return pd.concat(frames, ignore_index=True)


def appliance_results(model: PgmModel, out: dict) -> pd.DataFrame:
    """Per load/storage/sgen/gen/ext_grid: p_mw, q_mvar in pandapower's sign for the element
    (load/storage consumption positive, sgen/gen/ext_grid generation positive)."""
    frames = []
    for table in ("load", "storage", "sgen", "gen", "ext_grid"):
        ids = model.ids.get(table)
        comp = APPLIANCE_TABLES[table]
        if ids is None or not len(ids) or comp not in out:
            continue
        arr = out[comp]
        a, _ = _take(arr, ids.to_numpy())
        p, q = a["p"] / 1e6, a["q"] / 1e6
        if table == "load":
            # add the constant-impedance/-current parts of ZIP loads
            for extra in ("load_z", "load_i"):
                eids = model.ids.get(extra)
                if eids is not None and len(eids):
                    ea, _ = _take(arr, eids.to_numpy())
                    pos = ids.index.get_indexer(eids.index)
                    np.add.at(p, pos, ea["p"] / 1e6)
                    np.add.at(q, pos, ea["q"] / 1e6)
        frames.append(pd.DataFrame({"element_type": table, "element_id": ids.index.to_numpy().astype(np.int64),
                                    "p_mw": p, "q_mvar": q, "energized": a["energized"].astype(bool)}))
    if not frames:
        return pd.DataFrame(columns=["element_type", "element_id", "p_mw", "q_mvar", "energized"])
    return pd.concat(frames, ignore_index=True)
