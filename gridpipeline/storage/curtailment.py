"""Why each MWh was curtailed: the binding constraint behind every (generator, step) with curtailment,
read from the dispatch LP's duals and prices.

Order of reasons, first that applies:

1. ``overload of <branch>`` / ``overvoltage at <bus>``: a grid limit row binds at the step (non-zero
   dual) and the generator's output pushes it (positive sensitivity);
2. ``export limit``: the substation's export limit binds;
3. ``negative price``: exporting or consuming costs money at the step, so generation is worth less
   than nothing (the price the plan sells at is below 0);
4. ``storage full``: every battery that could absorb the output is at its maximum energy;
5. ``value below price``: otherwise (curtailing was cheaper than any use of the energy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.storage.dispatch import DispatchInputs, DispatchResult, Fleet


def curtailment_reasons(result: DispatchResult, x: DispatchInputs, fleet: Fleet, times: pd.DatetimeIndex,
                        min_mw: float = 1e-4) -> pd.DataFrame:
    """One row per generator and step with curtailment: MW, MWh, reason, the binding element, its dual."""
    T = result.curtail.shape[0]
    binding = pd.DataFrame(result.binding) if result.binding else pd.DataFrame(columns=["constraint", "where", "step", "dual"])
    rows = []
    names = list(x.limit_names)
    full = result.energy[1:] >= (np.asarray(x.e_max) - 1e-6)[None, :] if fleet.n else np.ones((T, 0), dtype=bool)
    for t, g in zip(*np.nonzero(result.curtail > min_mw)):
        mw = float(result.curtail[t, g])
        reason, element, dual = "value below price", None, None
        at = binding[binding.step == t]
        grid = at[at.constraint.str.startswith("grid limit")]
        pushing = []
        for r in grid.itertuples():
            k = names.index(r.where) if r.where in names else None
            s = x.sens_generator[k, g] if (k is not None and x.sens_generator is not None) else 0.0
            if s * np.sign(r.dual if r.constraint.endswith("upper") else -r.dual) != 0 and (
                    (r.constraint.endswith("upper") and s > 0) or (r.constraint.endswith("lower") and s < 0)):
                pushing.append((abs(r.dual * s), r))
        if pushing:
            _, r = max(pushing, key=lambda p: p[0])
            element, dual = r.where, float(r.dual)
            reason = f"overvoltage at {r.where.replace(' voltage', '')}" if r.where.endswith("voltage") \
                else f"overload of {r.where.replace(' loading', '')}"
        elif len(at[at.constraint == "export limit"]):
            r = at[at.constraint == "export limit"].iloc[0]
            reason, element, dual = "export limit", "substation", float(r.dual)
        elif x.price_sell[t] < 0:
            reason, dual = "negative price", float(x.price_sell[t])
        elif fleet.n and full[t].all():
            reason = "storage full"
        rows.append({"step_start": times[t], "generator_id": fleet.generator_ids[g], "curtailed_mw": mw,
                     "curtailed_mwh": mw * x.dt_h, "reason": reason, "binding_element": element, "dual": dual})
    return pd.DataFrame(rows, columns=["step_start", "generator_id", "curtailed_mw", "curtailed_mwh", "reason",
                                       "binding_element", "dual"])


__all__ = ["curtailment_reasons"]
