"""Curtailment with its reason, on cases where the reason is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gridpipeline.storage.curtailment import curtailment_reasons
from gridpipeline.storage.dispatch import DispatchInputs, DispatchModel, Fleet

TIMES = pd.date_range("2026-06-21 10:00", periods=3, freq="h", tz="UTC")


def _case(price, avail, limit=None, export_max=None, e_max=1.0, soc0=0.0):
    fleet = Fleet(("B1",), eta_c=np.array([1.0]), eta_d=np.array([1.0]), generator_ids=("PV7",))
    x = DispatchInputs(dt_h=1.0, price_buy=np.asarray(price, float), price_sell=np.asarray(price, float),
                       net_load=np.zeros(3), soc0=np.array([soc0]), e_min=np.zeros(1), e_max=np.array([e_max]),
                       p_charge_max=np.array([1.0]), p_discharge_max=np.array([1.0]), degradation=np.array([0.5]),
                       e_target=np.zeros(1), terminal_value=0.0, gen_avail=np.asarray(avail, float).reshape(3, 1),
                       curtail_value=np.array([5.0]), export_max=export_max)
    K = 0
    if limit is not None:  # line 4 carries the PV output: 10 % loading per MW, limit 100 %
        K = 1
        x.limit_base = np.asarray(avail, float).reshape(3, 1) * 10.0
        x.limit_lower, x.limit_upper = np.array([-1e6]), np.array([limit])
        x.sens_battery, x.sens_generator = np.array([[0.0]]), np.array([[10.0]])
        x.limit_names = ("line 4 loading",)
    r = DispatchModel(fleet, 3, limit_rows=K).solve(x)
    return curtailment_reasons(r, x, fleet, TIMES), r


def test_an_overloaded_line_names_itself():
    c, r = _case([50, 50, 50], [12, 3, 3], limit=100.0, e_max=0.0)
    assert list(c.reason) == ["overload of line 4"] and c.curtailed_mw.iloc[0] == 2.0
    assert c.binding_element.iloc[0] == "line 4 loading" and c.dual.iloc[0] != 0


def test_negative_prices_and_the_export_limit():
    c, _ = _case([-20, 50, 50], [3, 0, 0], e_max=1.0)
    assert c.reason.tolist() == ["negative price"] and c.curtailed_mw.iloc[0] == 3.0
    c, _ = _case([50, 50, 50], [3, 3, 0], export_max=np.array([2.0, 2.0, 2.0]), e_max=1.0)
    assert set(c.reason) == {"export limit"}
