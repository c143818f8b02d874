"""The world's battery management systems, served over Modbus TCP on 127.0.0.1 (pymodbus).

Each battery site's controller is a Modbus unit (the register map of
:mod:`gridpipeline.common.bms_registers`); one server is a site gateway holding up to 247 units, so a
large fleet runs several servers. The registers are filled from the world's true battery state at
every read; a write to the setpoint register is what the world's battery then follows (within its
limits), and stays readable, so the pipeline can confirm its write by reading it back.

Curtailable PV and wind inverters are served the same way, with the SunSpec-style map of
:mod:`gridpipeline.common.inverter_registers` (an active-power limit in percent of the rating).

A written setpoint or limit holds for ``HOLD_S`` seconds; a controller that is not refreshed within
that time falls back to its own behaviour (a watchdog, as real site controllers have), so a pipeline
that stops never leaves the fleet on a stale command.

Faults a real fleet shows, per unit: ``timeout`` (the controller does not answer in time),
``garbage`` (an SOC of 150 % and a negative capacity), ``frozen`` (the heartbeat stops), ``alarm``.
"""

from __future__ import annotations

import asyncio
import logging
import functools
import threading
import time
from dataclasses import dataclass, field

from gridpipeline.common import bms_registers as reg
from gridpipeline.common import inverter_registers as inv

log = logging.getLogger(__name__)

MAX_UNITS = 247
#: seconds a written setpoint or limit holds without a refresh (the controller's watchdog)
HOLD_S = 900.0


@dataclass
class BatteryUnit:
    """One battery's controller, as the world knows it (true state)."""

    battery_id: str
    capacity_mwh: float
    p_charge_max_mw: float
    p_discharge_max_mw: float
    soc: float                     # fraction of capacity
    soc_min: float = 0.0
    soc_max: float = 1.0
    eta_c: float = 1.0
    eta_d: float = 1.0
    fault: str | None = None       # None, "timeout", "garbage", "frozen", "alarm"
    setpoint_mw: float = 0.0       # last written, + discharge
    setpoint_at: float | None = None
    p_mw: float = 0.0              # what it does now, + discharge
    _t0: float = field(default_factory=time.monotonic)
    _frozen_hb: int | None = None

    COUNT = reg.COUNT

    def commanded(self, now: float | None = None) -> float | None:
        """The setpoint in force (MW, + discharge), or None when the unit follows its own behaviour."""
        if self.setpoint_at is None:
            return None
        if (time.monotonic() if now is None else now) - self.setpoint_at > HOLD_S:
            return None
        return self.setpoint_mw

    def write(self, address: int, values: list[int]) -> None:
        if address == reg.SETPOINT and len(values) >= 2:
            self.setpoint_mw = reg.from_words(values[0], values[1]) * reg.SCALE["setpoint"]
            self.setpoint_at = time.monotonic()

    def registers(self) -> list[int]:
        hb = int(time.monotonic() - self._t0)
        if self.fault == "frozen":
            self._frozen_hb = hb if self._frozen_hb is None else self._frozen_hb
            hb = self._frozen_hb
        e = self.soc * self.capacity_mwh
        p_ch = min(self.p_charge_max_mw, max(self.soc_max * self.capacity_mwh - e, 0) * 12)   # within 5 min
        p_dis = min(self.p_discharge_max_mw, max(e - self.soc_min * self.capacity_mwh, 0) * 12)
        status = reg.RUNNING | reg.REMOTE | (reg.ALARM if self.fault == "alarm" else 0)
        values = {"soc": self.soc * 100, "capacity": self.capacity_mwh, "p_charge_avail": p_ch,
                  "p_discharge_avail": p_dis, "status": status, "alarm_code": 17 if self.fault == "alarm" else 0,
                  "heartbeat": hb, "setpoint": self.setpoint_mw, "p_measured": self.p_mw}
        if self.fault == "garbage":
            values.update(soc=150.0, capacity=-self.capacity_mwh)
        return reg.encode(values)


@dataclass
class InverterUnit:
    """One curtailable generator's inverter (true state): what it could produce and its limit."""

    sgen_id: str
    rating_mw: float
    avail_mw: float = 0.0          # what the weather allows now
    p_mw: float = 0.0              # what it produces now
    limit_pct: float = 100.0
    limit_enabled: bool = False
    limit_at: float | None = None
    var_pct: float = 0.0
    var_enabled: bool = False
    var_at: float | None = None
    q_mvar: float = 0.0            # what it gives now
    fault: str | None = None
    _t0: float = field(default_factory=time.monotonic)

    COUNT = inv.COUNT

    def cap_mw(self, now: float | None = None) -> float | None:
        """The active-power cap in force (MW), or None when the inverter runs free."""
        if not self.limit_enabled or self.limit_at is None:
            return None
        if (time.monotonic() if now is None else now) - self.limit_at > HOLD_S:
            return None
        return max(self.limit_pct, 0.0) / 100.0 * self.rating_mw

    def q_setpoint_mvar(self, now: float | None = None) -> float | None:
        """The reactive power asked (Mvar, + injects), or None when there is no setpoint in force."""
        if not self.var_enabled or self.var_at is None:
            return None
        if (time.monotonic() if now is None else now) - self.var_at > HOLD_S:
            return None
        return self.var_pct / 100.0 * self.rating_mw

    def write(self, address: int, values: list[int]) -> None:
        if address == inv.LIMIT and len(values) >= 4:
            self.limit_pct = reg.from_words(values[0], values[1]) * inv.SCALE["w_max_lim_pct"]
            self.limit_enabled = reg.from_words(values[2], values[3]) == 1
            self.limit_at = time.monotonic()
        elif address == inv.VAR and len(values) >= 4:
            self.var_pct = reg.from_words(values[0], values[1]) * inv.SCALE["var_pct"]
            self.var_enabled = reg.from_words(values[2], values[3]) == 1
            self.var_at = time.monotonic()

    def registers(self) -> list[int]:
        hb = int(time.monotonic() - self._t0)
        status = reg.RUNNING | reg.REMOTE | (reg.ALARM if self.fault == "alarm" else 0)
        return inv.encode({"w": self.p_mw, "w_max": self.rating_mw, "w_avail": self.avail_mw, "status": status,
                           "heartbeat": hb, "w_max_lim_pct": self.limit_pct,
                           "w_max_lim_ena": 1 if self.limit_enabled else 0, "var_pct": self.var_pct,
                           "var_ena": 1 if self.var_enabled else 0, "var": self.q_mvar})


async def _action(unit, timeout_s: float, function_code: int, start_address: int, address: int,
                  count: int, current_registers: list[int], set_values) -> None:
    if unit.fault == "timeout":
        await asyncio.sleep(timeout_s)
    if set_values is None:  # a read: the registers as the controller reports them now
        words = unit.registers()
        for k in range(len(current_registers)):
            a = start_address + k
            if 0 <= a < unit.COUNT:
                current_registers[k] = words[a]
        return
    unit.write(address, list(set_values))
    return


class BmsGateway:
    """One Modbus TCP server on 127.0.0.1 for up to 247 units (batteries or inverters), in a thread
    of its own."""

    def __init__(self, units: list, port: int = 0, slow_s: float = 5.0):
        from pymodbus.simulator import DataType, SimData, SimDevice

        if not 0 < len(units) <= MAX_UNITS:
            raise ValueError(f"a gateway serves 1 to {MAX_UNITS} units, not {len(units)}")
        self.units = {k + 1: u for k, u in enumerate(units)}
        self.devices = [SimDevice(id=uid, simdata=[SimData(0, count=u.COUNT, values=0, datatype=DataType.REGISTERS)],
                                  action=functools.partial(_action, u, slow_s)) for uid, u in self.units.items()]
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        from pymodbus.server import ModbusTcpServer

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)

            async def main():
                self._server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
                task = asyncio.ensure_future(self._server.serve_forever())
                for _ in range(200):
                    if self._server.transport is not None:
                        break
                    await asyncio.sleep(0.01)
                self.port = self._server.transport.sockets[0].getsockname()[1]
                self._ready.set()
                await task

            try:
                self._loop.run_until_complete(main())
            except asyncio.CancelledError:
                pass

        self._thread = threading.Thread(target=run, name=f"bms-{id(self)}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the BMS gateway did not start")
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception as exc:  # noqa: BLE001 - stopping anyway
                log.debug("BMS gateway shutdown did not finish cleanly: %s", exc)
        if self._thread is not None:
            self._thread.join(5)

    def unit_ids(self) -> dict[str, int]:
        """battery or generator id -> Modbus unit id on this gateway."""
        return {getattr(u, "battery_id", None) or u.sgen_id: uid for uid, u in self.units.items()}


__all__ = ["HOLD_S", "MAX_UNITS", "BatteryUnit", "BmsGateway", "InverterUnit"]
