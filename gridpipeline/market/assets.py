"""The economics stage in Dagster (issue 14, in progress): nodal prices and the published tariff of every
dispatch plan, computed by the live dispatcher after the plan (seconds-fast work: runless events)."""

from dagster import AssetSpec

from gridpipeline.base.partitions import live_five_minute_partitions

GROUP = "market"

price_signals = AssetSpec(
    "price_signals", group_name=GROUP, deps=["dispatch_plan"], partitions_def=live_five_minute_partitions,
    description="Distribution locational marginal prices (DLMPs) over every dispatch plan's 24-hour horizon "
    "(LinDistFlow OPF of the network model as a radial feeder, cvxpy + HiGHS; market/dlmp.py), each split into "
    "energy, losses (loss factors around the estimated state), congestion and voltage from the duals, and the "
    "tariff per zone (feeder) published from them under the policy's cap, floor and largest change per hour "
    "(market/tariff.py). Computed by the live dispatcher after the plan, recorded in the decision ledger (kind "
    "`price_signal`, advisory by default: GRIDPIPELINE_DECISION_MODES=price_signal=...), written to "
    "market.price_signals (per zone and step) and market.nodal_prices (per bus, first hour).")

market_assets = [price_signals]
