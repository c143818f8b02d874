"""The area's swing equation against hand calculations."""

from __future__ import annotations

import pytest

from gridpipeline.world.frequency import AreaParams, FrequencyModel


def test_rocof_at_the_loss_is_f0_dp_over_2h():
    m = FrequencyModel(loss_mw=0.06 * 30_000)
    assert m.rocof_hz_s() == pytest.approx(-50 * 0.06 / (2 * 5.0))  # -0.3 Hz/s


def test_within_reserve_the_frequency_settles_on_droop_and_damping():
    p = AreaParams()
    m = FrequencyModel(p, loss_mw=0.01 * p.load_mw)  # 1 % < 3 % reserve
    for _ in range(1200):
        m.step(0.1)
    # 0.01 = df_pu (1/R + D) -> df = -0.01 / 21 * 50 Hz
    assert m.df_hz == pytest.approx(-0.01 / 21 * 50, rel=1e-3)
    assert m.steady_state_df_hz() == pytest.approx(m.df_hz, rel=1e-3)


def test_beyond_reserve_damping_carries_the_rest_and_local_relief_counts_by_share():
    p = AreaParams()
    m = FrequencyModel(p, share=1e-3, loss_mw=0.06 * p.load_mw)
    for _ in range(900):
        m.step(0.1)
    assert m.frequency_hz == pytest.approx(48.5, abs=1e-3)  # (0.06 - 0.03) / D of 50 Hz below
    # 0.9 MW shed locally stands for 900 MW over the area (3 % of its load): 3 % left, within reserve
    for _ in range(1200):
        m.step(0.1, local_relief_mw=0.9)
    assert m.frequency_hz == pytest.approx(50 - 0.03 / 21 * 50, abs=1e-3)
    assert m.steady_state_df_hz(0.9) == pytest.approx(-0.03 / 21 * 50, rel=1e-6)
