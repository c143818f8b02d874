"""The blocks of a network with their tiers and protection under a policy, from the files a utility
has: the network model, the customer registry and the policy (see ``blocks`` and ``policy``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gridpipeline.common.customers import class_of_profile
from gridpipeline.load.blocks import Blocks, switchable_blocks
from gridpipeline.load.policy import (
    CLASSES,
    Policy,
    PolicyError,
    block_priorities,
    check_against,
    read_policy,
)


@dataclass(frozen=True)
class Priorities:
    blocks: Blocks
    policy: Policy
    table: pd.DataFrame  # one row per block serving a load (block_priorities)
    loads: pd.DataFrame  # one row per load: load_id, block_id, class, customers, protected_by, from_registry
    policy_sha256: str
    missing_from_registry: tuple[int, ...]


def read_customers(path: Path, net) -> tuple[pd.DataFrame, tuple[int, ...]]:
    """The registry at ``path`` indexed by load id, for every load of ``net``. Loads the registry lacks
    get their class from their profile (``class_of_profile``) and one customer, and are returned as
    missing (the asset flags them); a row with an unknown class is a :class:`PolicyError` naming it."""
    try:
        reg = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as exc:
        raise PolicyError(f"{path}: cannot read the customer registry ({exc})") from exc
    need = {"load_id", "class", "customers"}
    if not need <= set(reg.columns):
        raise PolicyError(f"{path}: the customer registry needs columns {sorted(need)}, has {sorted(reg.columns)}")
    reg = reg.drop_duplicates("load_id", keep="last").set_index("load_id")
    bad = reg[~reg["class"].isin(CLASSES)]
    if len(bad):
        raise PolicyError(f"{path}: load {bad.index[0]}: unknown class {bad['class'].iloc[0]!r} "
                          f"(known: {', '.join(CLASSES)})")
    ld = net.load
    missing = tuple(int(i) for i in ld.index.difference(reg.index))
    if missing:
        prof = ld["profile"] if "profile" in ld else pd.Series("", index=ld.index)
        mv = net.bus.vn_kv.reindex(ld.bus).to_numpy() >= 1.0
        fill = pd.DataFrame({"class": [class_of_profile(prof[i], bool(m)) for i, m in zip(ld.index, mv)],
                             "customers": 1}, index=ld.index).loc[list(missing)]
        reg = pd.concat([reg, fill])
    reg = reg.loc[ld.index]
    reg["customers"] = pd.to_numeric(reg.customers, errors="coerce").fillna(1).clip(lower=1).astype(int)
    return reg, missing


def priorities_for(net, customers_path: Path, policy_path: Path) -> Priorities:
    """Blocks, policy and the priorities table; a bad policy or registry raises :class:`PolicyError`."""
    policy = read_policy(policy_path)
    reg, missing = read_customers(Path(customers_path), net)
    blk = switchable_blocks(net)
    lb = blk.load_block(net)
    check_against(policy, reg["class"], lb, blk.table.switchable)
    sc = net.load["scaling"].fillna(1.0) if "scaling" in net.load else 1.0
    table = block_priorities(policy, reg["class"], lb, net.load.p_mw * sc, blk.table, reg.customers)
    from gridpipeline.load.policy import protected_loads

    loads = pd.DataFrame({"load_id": net.load.index.astype(int), "block_id": lb.to_numpy(),
                          "class": reg["class"].to_numpy(), "customers": reg.customers.to_numpy(),
                          "protected_by": protected_loads(policy, reg["class"]).to_numpy(),
                          "from_registry": ~net.load.index.isin(missing)})
    sha = hashlib.sha256(Path(policy_path).read_bytes()).hexdigest()
    return Priorities(blk, policy, table, loads, sha, missing)
