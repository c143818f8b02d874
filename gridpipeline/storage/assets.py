"""The dispatch stage in Dagster.

Live, the dispatcher (``gridpipeline dispatch serve``, started by ``gridpipeline dev``) plans every
5 minutes and on departures, and reports ``storage_state``, ``dispatch_plan``, ``curtailment_plan``
and ``vpp_envelope`` with their metadata and checks as runless events. A run of ``dispatch_cycle``
(a backfill, or a partition launched from the UI) is a **replay**: the same plan recomputed as of the
partition's end from what the stores held then (the estimated state, the SOC telemetry, the
forecasts issued by then, the prices published by then). It never sends a command, and its ledger
records go to the ``replay`` chain.

``pending_decisions`` shows what waits for an operator; ``approve_decision`` approves or rejects one
(Launchpad: the decision id and the operator's name).
"""


from datetime import datetime, timedelta, timezone

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetMaterialization,
    AssetSpec,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    OpExecutionContext,
    asset,
    job,
    multi_asset,
    op,
)
from dagster_duckdb import DuckDBResource

from gridpipeline.base.partitions import live_five_minute_partitions
from gridpipeline.sources.resources import NetworkModelResource, SettingsResource
from gridpipeline.store import writer_lock

GROUP = "dispatch"
CHECKS = (
    ("plan_feasible_without_slack", "Warns when the plan needs a priced slack (a flagged violation)."),
    ("soc_within_limits", "Warns when a planned SOC leaves a unit's limits."),
    ("gate_passed", "Fails when the validation gate (AC power flow, base case and N-1) rejects the first step."),
    ("ledger_chain_intact", "Fails when the decision ledger's hash chain or its head does not verify."),
)
_engines: dict[str, object] = {}


def _utc(t) -> datetime:
    t = pd.Timestamp(t)
    return (t.tz_convert("UTC").tz_localize(None) if t.tzinfo else t).to_pydatetime()


def _engine(network: NetworkModelResource, s):
    from gridpipeline.storage.cycle import PlanEngine

    nm = network.load()
    if nm.sha256 not in _engines:
        _engines.clear()
        _engines[nm.sha256] = PlanEngine(nm.net, nm.zones, nm.sha256[:16], s.prices,
                                         loading_limit=s.loading_limit_percent, v_min=s.v_min_pu, v_max=s.v_max_pu,
                                         import_limit=s.import_limit_mw, export_limit=s.export_limit_mw)
    return _engines[nm.sha256]


def soc_from_telemetry(con, at: datetime, fleet: pd.DataFrame, lookback: timedelta = timedelta(minutes=10)
                       ) -> pd.DataFrame:
    """What a replay knows of the fleet: the newest clean SOC reading of every battery in
    ``(at - lookback, at]`` (the SOC sensors of the registry), as a BMS-like frame."""
    import duckdb

    try:
        df = con.execute("""
            SELECT s.element_id, arg_max(c.value, c.ts) AS soc, max(c.ts) AS ts
            FROM clean.clean_telemetry c JOIN telemetry.sensors s USING (sensor_id)
            WHERE s.kind = 'soc' AND s.element_type = 'storage' AND c.ts > ? AND c.ts <= ? AND c.value IS NOT NULL
            GROUP BY s.element_id""", [at - lookback, at]).df()
    except duckdb.CatalogException:
        df = pd.DataFrame(columns=["element_id", "soc", "ts"])
    soc = df.set_index("element_id").soc.reindex(fleet.storage_index)
    ok = soc.notna().to_numpy() & soc.between(0, 100).to_numpy()
    return pd.DataFrame({
        "battery_id": fleet.battery_id.to_numpy(), "available": ok,
        "reason": ["" if k else ("no SOC reading in telemetry" if pd.isna(v) else f"out of range: SOC {v:.1f} %")
                   for k, v in zip(ok, soc.to_numpy())],
        "soc_percent": soc.to_numpy(), "energy_mwh": soc.to_numpy() / 100 * fleet.capacity_mwh.to_numpy(),
        "capacity_mwh": fleet.capacity_mwh.to_numpy()})


@multi_asset(
    specs=[
        AssetSpec("storage_state", group_name=GROUP, deps=["grid_state"],
                  description="What every battery reports over Modbus (SOC, available power, status, heartbeat), with "
                  "the units left out and why (ops.storage_state). A replay reads the SOC telemetry instead."),
        AssetSpec("dispatch_plan", group_name=GROUP, deps=["storage_state", "demand_forecast", "renewable_forecast",
                                                         "grid_state"],
                  description="24 h at 5-minute steps for every battery and curtailable generator (cvxpy + HiGHS), "
                  "linearised grid limits, SOC headroom for the forecast quantiles' deviation the grid cannot carry; the first step passes the AC "
                  "gate before anything is sent (ops.dispatch_plan, ops.dispatch_substation; the decision ledger)."),
        AssetSpec("curtailment_plan", group_name=GROUP, deps=["dispatch_plan"],
                  description="Curtailed MW per generator and step with its reason from the binding constraint and "
                  "its dual: a named branch overload, overvoltage at a named bus, a negative price, storage full."),
        AssetSpec("vpp_envelope", group_name=GROUP, deps=["dispatch_plan"],
                  description="Per VPP and step: the aggregate P min/max and energy bounds around the plan."),
    ],
    check_specs=[AssetCheckSpec(name, asset="dispatch_plan", description=d) for name, d in CHECKS],
    partitions_def=live_five_minute_partitions,
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=12),
    pool="duckdb",
    can_subset=False,
)
def dispatch_cycle(context: AssetExecutionContext, duckdb: DuckDBResource, settings: SettingsResource,
                   network: NetworkModelResource):
    from gridpipeline.ledger.store import REPLAY, Ledger
    from gridpipeline.storage.cycle import ops_frames, write_ops
    from gridpipeline.storage.inputs import read_forecasts, state_at
    from gridpipeline.storage.report import dispatch_checks, dispatch_metadata

    s = settings.get()
    engine = _engine(network, s)
    ledger = Ledger(s.ledger)
    tw = context.partition_time_window
    ws, we = _utc(tw.start), _utc(tw.end)
    keys = context.partition_keys
    plans = []
    # one window at a time: its inputs in a short locked read, the plan with no lock, one short write
    for k, key in enumerate(keys):
        w_end = ws + timedelta(minutes=5 * (k + 1))
        with writer_lock(s.db_path), duckdb.get_connection() as con:
            st = state_at(con, w_end)
            bms = soc_from_telemetry(con, w_end, engine.fleet)
            fc = read_forecasts(con, w_end)
        run = engine.run(w_end, "replay", bms, st, fc)
        rec = ledger.append("dispatch", {**run.body, "replay_of": key}, actor=f"run {context.run_id[:8]}",
                            chain=REPLAY, created_at=w_end)
        with writer_lock(s.db_path), duckdb.get_connection() as con:
            write_ops(con, ops_frames(rec.id, w_end, w_end, run), replace_where=("= ?", [w_end]))
        plans.append((rec.id, run))
    if not plans:
        raise Failure("no partition to plan")
    plan_id, run = plans[-1]
    metas = dispatch_metadata(run, {}, run.seconds, plan_id, "replay")
    for key in ("storage_state", "dispatch_plan", "curtailment_plan", "vpp_envelope"):
        yield MaterializeResult(asset_key=key, metadata={**metas[key], "replayed_windows": len(plans),
                                                           "window": f"{ws:%Y-%m-%d %H:%M}..{we:%H:%M}",
                                                           "commands_sent": 0})
    for asset_key, name, passed, desc, meta in dispatch_checks(run.out, run.verdict, ledger):
        yield AssetCheckResult(asset_key=asset_key, check_name=name, passed=passed, description=desc, metadata=meta,
                               severity=AssetCheckSeverity.ERROR if name in ("gate_passed", "ledger_chain_intact")
                               else AssetCheckSeverity.WARN)


@asset(group_name=GROUP, description="Decisions waiting for an operator's approval, and the newest decisions with "
       "their state (automatic, pending, approved, rejected, expired). The dispatcher refreshes it after every plan "
       "and approval; materialise it to look now.")
def pending_decisions(context: AssetExecutionContext, settings: SettingsResource) -> MaterializeResult:
    from gridpipeline.ledger.store import Ledger
    from gridpipeline.storage.report import pending_metadata

    s = settings.get()
    return MaterializeResult(metadata=pending_metadata(Ledger(s.ledger), datetime.now(timezone.utc).replace(tzinfo=None)))


class DecisionConfig(Config):
    decision_id: str
    operator: str
    action: str = "approve"  # or "reject"
    note: str = ""


@op(out={}, description="Approve or reject one decision waiting in the ledger, in the operator's name.")
def settle_decision(context: OpExecutionContext, config: DecisionConfig, settings: SettingsResource):
    from gridpipeline.ledger.store import Ledger, LedgerError
    from gridpipeline.storage.report import pending_metadata

    s = settings.get()
    led = Ledger(s.ledger)
    if config.action not in ("approve", "reject"):
        raise Failure(f"action must be 'approve' or 'reject', not {config.action!r}")
    try:
        rec = (led.approve(config.decision_id, config.operator, note=config.note) if config.action == "approve"
               else led.reject(config.decision_id, config.operator, reason=config.note))
    except LedgerError as exc:
        raise Failure(str(exc)) from None
    context.log.info(f"{config.action}d {config.decision_id} as {config.operator}: ledger record {rec.id} (seq {rec.seq}); "
                     "the dispatcher executes an approved plan after the gate passes it on the state of that moment")
    yield AssetMaterialization("pending_decisions", metadata=pending_metadata(
        led, datetime.now(timezone.utc).replace(tzinfo=None)))


@job(description="Approve (or reject) a decision waiting for an operator: decision_id and operator in the Launchpad.")
def approve_decision():
    settle_decision()


storage_assets = [dispatch_cycle, pending_decisions]
storage_jobs = [approve_decision]

__all__ = ["approve_decision", "dispatch_cycle", "pending_decisions", "soc_from_telemetry",
           "storage_assets", "storage_jobs"]
