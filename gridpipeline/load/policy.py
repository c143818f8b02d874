"""The load-priority policy: tiers, protected loads, interruptible contracts and the value of lost load.

A policy is a YAML file (the default ships as ``data/load_policy.yaml``; the setting
``GRIDPIPELINE_LOAD_POLICY`` names another). It is validated against the network's loads, their
classes and the switchable blocks when it is loaded, and every problem is one :class:`PolicyError`
that names the entry:

* an unknown class (in a tier, the protected classes or the value of lost load);
* overlapping tiers (a tier number twice, or a class in two tiers), or a class in none;
* a protected load under an interruptible contract;
* a contract on a load whose block cannot be switched (no controllable switch feeds it).

Tier 1 is the most critical. A block's tier is the most critical tier among the loads it serves, and
a block is protected when it serves a protected load (it is then never shed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

CLASSES = ("residential", "commercial", "industrial", "critical")


class PolicyError(ValueError):
    """A policy entry that cannot hold; the message names the entry."""


@dataclass(frozen=True)
class Contract:
    """An interruptible-load contract on one load."""

    load_id: int
    interruptible_mw: float
    max_per_day: int
    max_per_month: int
    max_duration_min: float
    notice_min: float
    compensation_eur_mwh: float
    name: str = ""


@dataclass(frozen=True)
class Rotation:
    """How rolling outages run: the longest a block stays out, the shortest it stays out or back in
    once switched, and the switch operations allowed per hour over the whole grid."""

    max_outage_min: float = 60.0
    min_off_min: float = 10.0
    min_on_min: float = 15.0
    switching_per_hour: int = 60


@dataclass(frozen=True)
class Policy:
    tiers: dict[str, int]  # class -> tier (1 most critical)
    tier_names: dict[int, str]
    protected_classes: tuple[str, ...]
    protected_loads: tuple[int, ...]
    contracts: tuple[Contract, ...]
    voll_eur_mwh: dict[str, float]
    source: str = "<dict>"
    notes: dict = field(default_factory=dict)
    rotation: Rotation = field(default_factory=Rotation)
    #: demand response (``load.dr``): expected_delivery, answer_timeout_min, tou_eur_mwh, price_responsive
    demand_response: dict = field(default_factory=dict)

    def contract_of(self) -> dict[int, Contract]:
        return {c.load_id: c for c in self.contracts}


def _num(entry: str, d: dict, key: str, kind=float, minimum: float = 0.0):
    if key not in d:
        raise PolicyError(f"{entry}: '{key}' is missing")
    try:
        v = kind(d[key])
    except (TypeError, ValueError) as exc:
        raise PolicyError(f"{entry}: '{key}' must be a number, got {d[key]!r}") from exc
    if v < minimum:
        raise PolicyError(f"{entry}: '{key}' must be at least {minimum}, got {v}")
    return v


def parse_policy(doc: dict, source: str = "<dict>") -> Policy:
    """A :class:`Policy` from the YAML document ``doc``; checks what needs no network."""
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: a policy is a mapping with tiers, protected, contracts and voll_eur_mwh")
    tiers, names = {}, {}
    for i, t in enumerate(doc.get("tiers") or []):
        entry = f"tiers[{i}]" + (f" ({t.get('name')})" if isinstance(t, dict) and t.get("name") else "")
        if not isinstance(t, dict) or "tier" not in t or not t.get("classes"):
            raise PolicyError(f"{entry}: a tier needs 'tier' (1 = most critical) and 'classes'")
        n = _num(entry, t, "tier", int, 1)
        if n in names:
            raise PolicyError(f"{entry}: tier {n} is defined twice (overlapping tiers)")
        names[n] = str(t.get("name") or f"tier {n}")
        for c in t["classes"]:
            if c not in CLASSES:
                raise PolicyError(f"{entry}: unknown class {c!r} (known: {', '.join(CLASSES)})")
            if c in tiers:
                raise PolicyError(f"{entry}: class {c!r} is already in tier {tiers[c]} (overlapping tiers)")
            tiers[c] = n
    missing = [c for c in CLASSES if c not in tiers]
    if missing:
        raise PolicyError(f"tiers: no tier for class(es) {', '.join(missing)}")
    prot = doc.get("protected") or {}
    pclasses = tuple(prot.get("classes") or ())
    for c in pclasses:
        if c not in CLASSES:
            raise PolicyError(f"protected.classes: unknown class {c!r} (known: {', '.join(CLASSES)})")
    ploads = tuple(int(x) for x in (prot.get("loads") or ()))
    voll = {}
    for c, v in (doc.get("voll_eur_mwh") or {}).items():
        if c not in CLASSES:
            raise PolicyError(f"voll_eur_mwh: unknown class {c!r} (known: {', '.join(CLASSES)})")
        voll[c] = _num(f"voll_eur_mwh.{c}", {c: v}, c, float, 0.0)
    if missing := [c for c in CLASSES if c not in voll]:
        raise PolicyError(f"voll_eur_mwh: no value of lost load for class(es) {', '.join(missing)}")
    contracts = []
    for i, c in enumerate(doc.get("contracts") or []):
        entry = f"contracts[{i}]" + (f" ({c.get('name')})" if isinstance(c, dict) and c.get("name") else "")
        if not isinstance(c, dict) or "load" not in c:
            raise PolicyError(f"{entry}: a contract names its 'load' (the network's load id)")
        k = Contract(load_id=_num(entry, c, "load", int), interruptible_mw=_num(entry, c, "interruptible_mw"),
                     max_per_day=_num(entry, c, "max_per_day", int), max_per_month=_num(entry, c, "max_per_month", int),
                     max_duration_min=_num(entry, c, "max_duration_min", float, 5.0),
                     notice_min=_num(entry, c, "notice_min"), compensation_eur_mwh=_num(entry, c, "compensation_eur_mwh"),
                     name=str(c.get("name") or f"contract {i}"))
        if k.max_per_month < k.max_per_day:
            raise PolicyError(f"{entry}: max_per_month ({k.max_per_month}) is below max_per_day ({k.max_per_day})")
        contracts.append(k)
    rot = doc.get("rotation") or {}
    if not isinstance(rot, dict):
        raise PolicyError("rotation: a mapping of max_outage_min, min_off_min, min_on_min, switching_per_hour")
    dflt = Rotation()
    rotation = Rotation(
        max_outage_min=_num("rotation", {**{"max_outage_min": dflt.max_outage_min}, **rot}, "max_outage_min", float, 5.0),
        min_off_min=_num("rotation", {**{"min_off_min": dflt.min_off_min}, **rot}, "min_off_min", float, 0.0),
        min_on_min=_num("rotation", {**{"min_on_min": dflt.min_on_min}, **rot}, "min_on_min", float, 0.0),
        switching_per_hour=_num("rotation", {**{"switching_per_hour": dflt.switching_per_hour}, **rot},
                                "switching_per_hour", int, 1))
    if rotation.min_off_min > rotation.max_outage_min:
        raise PolicyError(f"rotation: min_off_min ({rotation.min_off_min}) is above max_outage_min "
                          f"({rotation.max_outage_min})")
    return Policy(tiers=tiers, tier_names=dict(sorted(names.items())), protected_classes=pclasses,
                  protected_loads=ploads, contracts=tuple(contracts), voll_eur_mwh=voll, source=source,
                  notes=dict(doc.get("notes") or {}), rotation=rotation,
                  demand_response=_demand_response(doc.get("demand_response") or {}))


DR_DEFAULTS = {"expected_delivery": 0.8, "answer_timeout_min": 5.0, "tou_eur_mwh": {"0": 150.0},
               "price_responsive": {}}


def _demand_response(d: dict) -> dict:
    """The ``demand_response`` section with its defaults, checked."""
    if not isinstance(d, dict):
        raise PolicyError("demand_response: a mapping of expected_delivery, answer_timeout_min, tou_eur_mwh, "
                          "price_responsive")
    out = {**DR_DEFAULTS, **d}
    e = _num("demand_response", out, "expected_delivery")
    if not 0 < e <= 1:
        raise PolicyError(f"demand_response: 'expected_delivery' is a share in (0, 1], got {e}")
    _num("demand_response", out, "answer_timeout_min", float, 0.5)
    tou = out["tou_eur_mwh"]
    if not isinstance(tou, dict) or not tou:
        raise PolicyError("demand_response.tou_eur_mwh: a mapping of the hour a price starts (0-23) to EUR/MWh")
    for h, v in tou.items():
        if not str(h).isdigit() or not 0 <= int(h) <= 23:
            raise PolicyError(f"demand_response.tou_eur_mwh: hour {h!r} is not 0-23")
        _num(f"demand_response.tou_eur_mwh.{h}", {"v": v}, "v", float, -1e6)
    for c, r in (out["price_responsive"] or {}).items():
        entry = f"demand_response.price_responsive.{c}"
        if not isinstance(r, dict):
            raise PolicyError(f"{entry}: a mapping of share and elasticity (and 'of', the class it is part of)")
        of = r.get("of", c)
        if of not in CLASSES:
            raise PolicyError(f"{entry}: unknown class {of!r} (known: {', '.join(CLASSES)}); a programme that is "
                              "part of a class names it with 'of'")
        if not 0 <= _num(entry, r, "share") <= 1:
            raise PolicyError(f"{entry}: 'share' is a share of the class's load in [0, 1]")
        if _num(entry, r, "elasticity", float, -5.0) > 0:
            raise PolicyError(f"{entry}: 'elasticity' is a price elasticity of demand, at most 0")
    return out


def read_policy(path: str | Path) -> Policy:
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot read the policy ({exc})") from exc
    return parse_policy(doc, source=str(path))


def check_against(policy: Policy, classes: pd.Series, load_block: pd.Series, switchable: pd.Series) -> None:
    """The checks that need the network: ``classes`` (load id -> class), ``load_block`` (load id ->
    block id) and ``switchable`` (block id -> bool). Raises :class:`PolicyError` naming the entry."""
    unknown = sorted(set(classes.dropna()) - set(CLASSES))
    if unknown:
        first = classes[classes.isin(unknown)].index[0]
        raise PolicyError(f"load {first}: unknown class {unknown[0]!r} in the customer registry "
                          f"(known: {', '.join(CLASSES)})")
    for i, k in enumerate(policy.contracts):
        entry = f"contracts[{i}] ({k.name}, load {k.load_id})"
        if k.load_id not in classes.index:
            raise PolicyError(f"{entry}: no such load in the network")
        if k.load_id in policy.protected_loads or classes[k.load_id] in policy.protected_classes:
            raise PolicyError(f"{entry}: load {k.load_id} is protected (class {classes[k.load_id]}) and cannot be "
                              "under an interruptible contract")
        blk = load_block.get(k.load_id)
        if blk is None or pd.isna(blk) or not bool(switchable.get(int(blk), False)):
            raise PolicyError(f"{entry}: its block {blk} cannot be switched (no circuit breaker or load-break "
                              "switch feeds it), so the load cannot be interrupted")
    for lid in policy.protected_loads:
        if lid not in classes.index:
            raise PolicyError(f"protected.loads: no load {lid} in the network")


def protected_loads(policy: Policy, classes: pd.Series) -> pd.Series:
    """Load id -> why it is protected ('' when it is not)."""
    why = pd.Series("", index=classes.index, dtype=object)
    why[classes.isin(policy.protected_classes)] = "class " + classes[classes.isin(policy.protected_classes)].astype(str)
    listed = classes.index.isin(policy.protected_loads)
    why[listed] = why[listed].where(why[listed] != "", "listed in protected.loads")
    return why


def block_priorities(policy: Policy, classes: pd.Series, load_block: pd.Series, load_mw: pd.Series,
                     blocks: pd.DataFrame, customers: pd.Series | None = None) -> pd.DataFrame:
    """One row per block that serves a load: tier (the most critical of its loads'), tier_name,
    loads, load_mw, customers, classes served, protected, protected_by (the loads that protect it
    and why), interruptible_mw (under contract), switchable, feeder, parent."""
    why = protected_loads(policy, classes)
    contract = policy.contract_of()
    df = pd.DataFrame({"block_id": load_block, "cls": classes.reindex(load_block.index),
                       "tier": classes.reindex(load_block.index).map(policy.tiers),
                       "mw": load_mw.reindex(load_block.index).fillna(0.0),
                       "customers": (customers.reindex(load_block.index).fillna(0) if customers is not None else 0),
                       "why": why.reindex(load_block.index).fillna(""),
                       "interruptible": [contract[i].interruptible_mw if i in contract else 0.0 for i in load_block.index]})
    rows = []
    for blk, g in df.groupby("block_id"):
        prot = g[g.why != ""]
        tier = int(g.tier.min())
        rows.append({"block_id": int(blk), "tier": tier, "tier_name": policy.tier_names.get(tier, f"tier {tier}"),
                     "loads": len(g), "load_mw": float(g.mw.sum()), "customers": int(g.customers.sum()),
                     "classes": ", ".join(sorted(g.cls.dropna().unique())), "protected": bool(len(prot)),
                     "protected_by": "; ".join(f"load {i}: {w}" for i, w in prot.why.items()),
                     "interruptible_mw": float(g.interruptible.sum())})
    out = pd.DataFrame(rows).set_index("block_id")
    return out.join(blocks[["switchable", "feeder", "parent", "feeding_switch"]], how="left")
