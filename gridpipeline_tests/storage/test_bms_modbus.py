"""A loopback Modbus fleet (real pymodbus server and client on 127.0.0.1): one unit times out, one
reports garbage, one's heartbeat freezes, one is in alarm; each is excluded with its reason, and the
healthy one takes a setpoint confirmed by reading it back."""

from __future__ import annotations

import time

import pytest

from gridpipeline.common import bms_registers as reg
from gridpipeline.common.field_map import Endpoint
from gridpipeline.sources.bms import BmsClient
from gridpipeline.world.bms import BatteryUnit, BmsGateway


def test_register_words_round_trip_signed_values():
    for v in (0, 1, -1, 2**31 - 1, -(2**31), 123456789, -4_000_000):
        assert reg.from_words(*reg.to_words(v)) == v
    vals = {"soc": 55.5, "capacity": 2.0, "setpoint": -1.25, "p_measured": 0.004}
    back = reg.decode(reg.encode(vals))
    assert back["soc"] == pytest.approx(55.5) and back["capacity"] == pytest.approx(2.0)
    assert back["setpoint"] == pytest.approx(-1.25) and back["p_measured"] == pytest.approx(0.004)


@pytest.fixture
def fleet():
    units = [BatteryUnit("ok", 2.0, 1.0, 1.0, soc=0.5),
             BatteryUnit("slow", 2.0, 1.0, 1.0, soc=0.5, fault="timeout"),
             BatteryUnit("garbage", 2.0, 1.0, 1.0, soc=0.5, fault="garbage"),
             BatteryUnit("frozen", 2.0, 1.0, 1.0, soc=0.5, fault="frozen"),
             BatteryUnit("alarm", 2.0, 1.0, 1.0, soc=0.5, fault="alarm")]
    gw = BmsGateway(units, slow_s=2.0)
    port = gw.start()
    client = BmsClient([Endpoint(b, "127.0.0.1", port, uid) for b, uid in gw.unit_ids().items()],
                       timeout_s=0.5, stale_s=1.5)
    yield gw, client
    client.close()
    gw.stop()


def test_bad_units_are_excluded_with_reasons_and_the_rest_dispatched(fleet):
    gw, client = fleet
    first = client.read_fleet().set_index("battery_id")
    assert first.loc["ok", "available"] and first.loc["ok", "soc_percent"] == pytest.approx(50.0)
    assert first.loc["ok", "energy_mwh"] == pytest.approx(1.0)
    assert first.loc["slow", "reason"].startswith("no answer")
    assert first.loc["garbage", "reason"] == "out of range: SOC 150.0 %, capacity -2.000 MWh"
    assert first.loc["alarm", "reason"] == "alarm 17"
    time.sleep(2.2)
    second = client.read_fleet().set_index("battery_id")
    assert second.loc["ok", "available"]
    assert second.loc["frozen", "reason"].startswith("stale heartbeat")
    ok, detail = client.write_setpoint("ok", -0.75)
    assert ok, detail
    assert gw.units[gw.unit_ids()["ok"]].setpoint_mw == pytest.approx(-0.75)  # the world's unit received it
    assert client.read_fleet().set_index("battery_id").loc["ok", "setpoint_mw"] == pytest.approx(-0.75)
    ok, detail = client.write_setpoint("slow", 0.5)
    assert not ok and detail.startswith("no answer")


def test_a_gateway_that_is_down_makes_every_unit_unavailable_not_a_crash():
    client = BmsClient([Endpoint("a", "127.0.0.1", 9, 1), Endpoint("b", "127.0.0.1", 9, 2)], timeout_s=0.3)
    df = client.read_fleet()
    assert not df.available.any() and df.reason.str.startswith("no answer").all()
