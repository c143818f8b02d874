"""Bad-data detection and identification for ``estimate_state``.

* Detection: chi-squared test of the WLS objective J(x) against its degrees of freedom m - n.
* Identification: largest normalised residual r_N = r / sqrt(Omega_ii) with the residual covariance
  Omega = R - H G^-1 H^T, G = H^T R^-1 H. PGM does not expose Omega, so H is the analytic Jacobian
  of the AC measurement functions of ``estimation.WlsModel`` (PGM's own bus-branch model) at the
  estimated state. diag(H G^-1 H^T) is computed exactly: densely for small systems, otherwise from
  a sparse LDL^T factor of G with Takahashi's selected inverse (only the entries of G^-1 on the
  factor's pattern are formed, which is all diag(H G^-1 H^T) needs).
* ``detect_bad_data`` removes the measurement (or indistinguishable group) with the largest
  |r_N| > threshold while the chi-squared test alarms, re-estimates, and repeats up to
  ``max_removals`` times. Appliance measurements at one bus enter PGM only as their sum, so they
  share one r_N and are removed together ("group").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from gridpipeline.grid.estimation import EstimationResult, estimate_state
from gridpipeline.grid.network import model_of
from gridpipeline.grid.residuals import residual_covariance_diag


def chi2_test(J: float, dof: int, alpha: float = 0.01) -> dict:
    """Chi-squared test of J(x): alarm if J exceeds the (1 - alpha) quantile with ``dof`` degrees."""
    if dof <= 0 or not np.isfinite(J):
        return {"J": float(J), "dof": int(dof), "threshold": float("nan"), "p_value": float("nan"), "alarm": False}
    thr = float(stats.chi2.ppf(1.0 - alpha, dof))
    return {"J": float(J), "dof": int(dof), "threshold": thr, "p_value": float(stats.chi2.sf(J, dof)),
            "alarm": bool(J > thr)}


def normalized_residuals(result: EstimationResult) -> pd.DataFrame:
    """Per WLS row: kind, r (pu), sigma, omega, r_n, redundancy rho = Omega_ii / sigma_i^2, and the
    measurement rows (input index labels) behind it. Computes Omega if the estimate lacks it."""
    wls = result.wls
    st = result.state
    if wls is None or st is None:
        raise ValueError("the estimate has no WLS model (fallback result)")
    omega = st.get("omega")
    if omega is None:
        omega = residual_covariance_diag(wls, st["V"])
        st["omega"] = omega
        with np.errstate(divide="ignore", invalid="ignore"):
            st["rn"] = np.where(omega > 1e-12 * wls.sigma ** 2, st["r"] / np.sqrt(np.maximum(omega, 0.0)), np.nan)
    used = st["used"]
    labels = used["row"].to_numpy()
    rows = []
    for i in range(len(wls.kind)):
        mem = wls.members_of(i)
        rows.append({
            "wls_row": i, "kind": int(wls.kind[i]), "index": int(wls.index[i]), "r": float(st["r"][i]),
            "sigma": float(wls.sigma[i]), "omega": float(omega[i]), "r_n": float(st["rn"][i]),
            "rho": float(omega[i] / wls.sigma[i] ** 2), "pseudo": bool(wls.pseudo[i]),
            "constraint": bool(wls.constraint[i]), "rows": [labels[pos] for pos, _ in mem],
            "shares": [float(s) for _, s in mem],
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- identification
@dataclass
class BadDataResult:
    """``estimate``: final estimate with the bad data removed; ``suspects``: one row per input
    measurement flagged (row, sensor_id, kind, element_type, element_id, terminal, value, r_n,
    iteration, action in removed/kept/unremovable, note); ``removed``: input index labels removed;
    ``chi2_initial``/``chi2_final``: chi-squared test dicts; ``iterations``: estimates run."""

    estimate: EstimationResult
    suspects: pd.DataFrame
    removed: list
    chi2_initial: dict
    chi2_final: dict
    iterations: int
    elapsed_s: float
    estimate_s: float
    residual_s: float
    history: list = field(default_factory=list)


_SUSPECT_COLS = ["row", "sensor_id", "kind", "element_type", "element_id", "terminal", "value", "r_n", "iteration",
                 "action", "note"]


def detect_bad_data(
    net_or_model,
    measurements: pd.DataFrame,
    *,
    threshold: float = 3.0,
    alpha: float = 0.01,
    max_removals: int = 10,
    chi2_gate: bool = True,
    critical_rho: float = 1e-6,
    **estimate_kwargs: Any,
) -> BadDataResult:
    """Chi-squared detection + iterative largest-normalised-residual removal.

    While the estimate's largest |r_N| exceeds ``threshold`` and bad data is detected (with
    ``chi2_gate``: the chi-squared test at level ``alpha`` alarms, or the largest |r_N| exceeds the
    family-wise bound Phi^-1(1 - a/2) with a = 1 - (1 - alpha)^(1/m) for m candidate rows, which keeps
    the false-alarm rate near ``alpha`` on any grid size), the measurement row(s) behind it are
    removed and the state re-estimated, at most ``max_removals`` times. A candidate whose removal would leave the
    system unobservable (PGM then needs pseudo-measurements) or whose redundancy is below
    ``critical_rho`` is put back and reported ``unremovable``. Remaining |r_N| > threshold are
    reported ``kept``. ``measurements`` needs a unique index (used as the row label).
    """
    t0 = time.perf_counter()
    if not measurements.index.is_unique:
        raise ValueError("measurements need a unique index to report removals")
    _, model = model_of(net_or_model)
    estimate_kwargs = dict(estimate_kwargs)
    estimate_kwargs["normalized_residuals"] = True
    current = measurements
    removed: list = []
    locked: set = set()
    suspects: list[dict] = []
    history = []
    est_s = res_s = 0.0
    est = None
    chi0 = None
    iteration = 0
    baseline_observable = None
    while True:
        ts = time.perf_counter()
        est = estimate_state(model, current, **estimate_kwargs)
        est_s += est.pgm_s
        res_s += time.perf_counter() - ts - est.pgm_s
        iteration += 1
        chi = chi2_test(est.J, est.dof, alpha)
        history.append({"iteration": iteration, **chi, "max_abs_rn": est.max_abs_rn, "n_removed": len(removed),
                        "converged": est.converged})
        if chi0 is None:
            chi0 = chi
            baseline_observable = est.observable
        if not est.converged or est.state is None or est.state.get("rn") is None:
            break
        if baseline_observable and not est.observable and removed:
            # the last removal made the system unobservable: restore it, lock it, re-estimate
            last = removed.pop()
            group = last["rows"]
            current = measurements.drop(index=[r for rec in removed for r in rec["rows"]])
            for rec in suspects:
                if rec["row"] in group and rec["action"] == "removed" and rec["iteration"] == last["iteration"]:
                    rec["action"] = "unremovable"
                    rec["note"] = (rec["note"] + "; " if rec["note"] else "") + "removal makes the system unobservable"
            locked.update(group)
            continue
        wls = est.wls
        rn = est.state["rn"]
        omega = est.state["omega"]
        used = est.state["used"]
        labels = used["row"].to_numpy()
        has_mem = wls.mem_ptr[1:] > wls.mem_ptr[:-1]
        ok = ~wls.constraint & ~wls.pseudo & np.isfinite(rn) & has_mem
        if locked:
            bad_rows = wls.mem_row[np.isin(labels[wls.mem_pos], list(locked))]
            ok[bad_rows] = False
        cand = np.flatnonzero(ok)
        if not len(cand):
            break
        absrn = np.abs(rn[cand])
        order = np.argsort(-absrn, kind="stable")
        top = cand[order[0]]
        top_rn = float(rn[top])
        # detection: the global chi-squared test, or r_N beyond the family-wise (Sidak) bound for the
        # number of candidate rows; the chi-squared test alone loses power on large grids
        t_family = float(stats.norm.isf(0.5 * (1.0 - (1.0 - alpha) ** (1.0 / max(len(cand), 1)))))
        alarm = chi["alarm"] or abs(top_rn) > t_family or not chi2_gate
        if abs(top_rn) <= threshold or not alarm or len(removed) >= max_removals:
            why = ("removal limit reached" if len(removed) >= max_removals and abs(top_rn) > threshold and alarm
                   else "no bad data detected (chi-squared and family-wise r_N tests passed)"
                   if abs(top_rn) > threshold else "")
            for i in np.array(cand)[order]:
                if abs(rn[i]) <= threshold:
                    break
                for pos, _ in wls.members_of(i):
                    suspects.append(_suspect(used, pos, float(rn[i]), iteration, "kept", why))
            break
        group = [labels[p] for p, _ in wls.members_of(top)]
        rho = omega[top] / wls.sigma[top] ** 2
        if rho < critical_rho:
            for pos, _ in wls.members_of(top):
                suspects.append(_suspect(used, pos, top_rn, iteration, "unremovable", "critical measurement"))
            locked.update(group)
            continue
        note = ""
        if len(group) > 1:
            note = f"group of {len(group)} appliance measurements at one bus (only their sum is observable)"
        for pos, _ in wls.members_of(top):
            suspects.append(_suspect(used, pos, top_rn, iteration, "removed", note))
        removed.append({"rows": group, "iteration": iteration, "r_n": top_rn})
        current = current.drop(index=group)
    out = pd.DataFrame(suspects, columns=_SUSPECT_COLS)
    chi_final = chi2_test(est.J, est.dof, alpha) if est is not None else {}
    return BadDataResult(
        estimate=est, suspects=out, removed=[r for rec in removed for r in rec["rows"]], chi2_initial=chi0 or {},
        chi2_final=chi_final, iterations=iteration, elapsed_s=time.perf_counter() - t0, estimate_s=est_s,
        residual_s=res_s, history=history,
    )


def _suspect(used: pd.DataFrame, pos: int, rn: float, iteration: int, action: str, note: str) -> dict:
    r = used.iloc[pos]
    return {"row": r["row"], "sensor_id": r["sensor_id"], "kind": r["kind"], "element_type": r["element_type"],
            "element_id": r["element_id"], "terminal": r["terminal"], "value": r["value"], "r_n": rn,
            "iteration": iteration, "action": action, "note": note}
