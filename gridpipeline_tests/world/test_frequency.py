"""The area's swing equation against hand calculations."""

from __future__ import annotations

import pytest

from gridpipeline.world.frequency import AreaParams, FrequencyModel


def test_rocof_at_the_loss_is_f0_dp_over_2h():
    m = FrequencyModel(loss_mw=0.06 * 30_000)
    assert m.rocof_hz_s() == pytest.approx(-50 * 0.06 / (2 * 5.0))  # -0.3 Hz/s


def test_within_reserve_the_frequency_settles_on_droop_and_damping():
    p = AreaParams(secondary_s=0.0)  # primary response only
    m = FrequencyModel(p, loss_mw=0.01 * p.load_mw)  # 1 % < 3 % reserve
    for _ in range(1200):
        m.step(0.1)
    # 0.01 = df_pu (1/R + D) -> df = -0.01 / 21 * 50 Hz
    assert m.df_hz == pytest.approx(-0.01 / 21 * 50, rel=1e-3)
    assert m.steady_state_df_hz() == pytest.approx(m.df_hz, rel=1e-3)


def test_beyond_reserve_damping_carries_the_rest_and_local_relief_counts_by_share():
    p = AreaParams(secondary_s=0.0)  # primary response only
    m = FrequencyModel(p, share=1e-3, loss_mw=0.06 * p.load_mw)
    for _ in range(900):
        m.step(0.1)
    assert m.frequency_hz == pytest.approx(48.5, abs=1e-3)  # (0.06 - 0.03) / D of 50 Hz below
    # 0.9 MW shed locally stands for 900 MW over the area (3 % of its load): 3 % left, within reserve
    for _ in range(1200):
        m.step(0.1, local_relief_mw=0.9)
    assert m.frequency_hz == pytest.approx(50 - 0.03 / 21 * 50, abs=1e-3)
    assert m.steady_state_df_hz(0.9) == pytest.approx(-0.03 / 21 * 50, rel=1e-6)


def test_secondary_control_brings_the_frequency_back_within_six_minutes():
    p = AreaParams()
    m = FrequencyModel(p, loss_mw=0.02 * p.load_mw)
    for _ in range(300):  # 30 s: the primary response holds the frequency near droop
        m.step(0.1)
    assert m.frequency_hz < 50 - 0.5 * 0.02 / 21 * 50
    for _ in range(3300):  # 6 minutes after the loss
        m.step(0.1)
    assert abs(m.df_hz) < 0.05 * 0.02 / 21 * 50 and m.ps_mw == pytest.approx(0.02 * p.load_mw, rel=0.06)
    # beyond its reserve, secondary control holds at the limit
    m2 = FrequencyModel(p, loss_mw=0.12 * p.load_mw)
    for _ in range(12000):
        m2.step(0.1)
    assert m2.ps_mw == pytest.approx(0.10 * p.load_mw)


def test_rebase_keeps_the_balance_and_the_next_event_counts_its_relief_from_zero():
    p = AreaParams()
    m = FrequencyModel(p, share=1e-3, loss_mw=0.06 * p.load_mw)
    for _ in range(100):
        m.step(0.1, local_relief_mw=1.2)
    m.loss_mw = 0.0
    for _ in range(3000):  # the loss is over, the relief stays: secondary control backs generation off
        m.step(0.1, local_relief_mw=1.2)
    assert abs(m.df_hz) < 0.01 and m.ps_mw == pytest.approx(-1200, rel=0.05)
    before = (m.rocof_hz_s(1.2), m.df_hz)
    m.rebase(1.2)
    assert m.ps_mw == 0.0 and m.rocof_hz_s(0.0) == pytest.approx(before[0], abs=1e-12) and m.df_hz == before[1]
