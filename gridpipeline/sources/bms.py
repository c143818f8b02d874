"""What the batteries report, read over Modbus TCP (the register map of
:mod:`gridpipeline.common.bms_registers`), and setpoints written back with a read-back confirmation.

Every unit read gets a verdict: ``available``, or unavailable with its reason, so one bad unit never
stops the run and never enters a plan:

* ``no answer: ...``: a Modbus exception, a refused connection or a timeout;
* ``out of range: ...``: SOC outside 0-100 %, a capacity that is not positive, negative available power;
* ``stale heartbeat``: the counter has not moved for ``stale_s`` seconds since it was last seen;
* ``alarm <code>`` or ``not available (maintenance)``: the controller says so;
* ``remote control disabled``: it would ignore a setpoint.
"""

from __future__ import annotations

import time

import pandas as pd

from gridpipeline.common import bms_registers as reg
from gridpipeline.common import inverter_registers as inv
from gridpipeline.common.field_map import Endpoint


class BmsClient:
    """Reads a fleet and writes setpoints (batteries) and active-power limits (curtailable
    inverters). Keeps each unit's last heartbeat to tell a stale one."""

    def __init__(self, endpoints: list[Endpoint], timeout_s: float = 1.0, stale_s: float = 10.0,
                 inverters: list[Endpoint] | None = None):
        self.endpoints = {e.device_id: e for e in endpoints}
        self.inverters = {e.device_id: e for e in inverters or []}
        self.timeout_s = timeout_s
        self.stale_s = stale_s
        self._clients: dict[tuple[str, int], object] = {}
        self._hb: dict[str, tuple[int, float]] = {}
        self._down: set | None = None  # gateways refused during one fleet read  # battery -> (heartbeat, when it last changed)

    def _client(self, e: Endpoint):
        from pymodbus.client import ModbusTcpClient

        key = (e.host, e.port)
        c = self._clients.get(key)
        if c is None:
            c = ModbusTcpClient(e.host, port=e.port, timeout=self.timeout_s, retries=0)
            self._clients[key] = c
        if not c.connected and not c.connect():
            raise ConnectionError(f"gateway {e.host}:{e.port} unreachable")
        return c

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def _read(self, e: Endpoint, regmap=reg) -> tuple[dict | None, str | None]:
        down = getattr(self, "_down", None)
        if down is not None and (e.host, e.port) in down:  # one refused gateway is not asked 247 times
            return None, f"no answer: gateway {e.host}:{e.port} unreachable"
        try:
            r = self._client(e).read_holding_registers(0, count=regmap.COUNT, device_id=e.unit)
        except Exception as exc:  # noqa: BLE001 - pymodbus raises several kinds; each is "no answer"
            self._drop(e)
            if isinstance(exc, ConnectionError) and down is not None:
                down.add((e.host, e.port))
                return None, f"no answer: {exc}"
            return None, f"no answer: {type(exc).__name__}"
        if r.isError() or len(getattr(r, "registers", [])) < regmap.COUNT:
            return None, f"no answer: Modbus exception {getattr(r, 'exception_code', '?')}"
        return regmap.decode(r.registers), None

    def _drop(self, e: Endpoint) -> None:
        c = self._clients.pop((e.host, e.port), None)
        if c is not None:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    def read_inverters(self) -> pd.DataFrame:
        """One row per curtailable inverter: power now, rating, available power, its limit, ``available``
        and ``reason``."""
        rows = []
        self._down = set()
        for gid, e in self.inverters.items():
            v, why = self._read(e, inv)
            row = {"sgen_id": gid, "available": v is not None, "reason": why or ""}
            if v is not None:
                row.update({"p_mw": v["w"], "rating_mw": v["w_max"], "p_avail_mw": v["w_avail"],
                            "limit_pct": v["w_max_lim_pct"], "limit_enabled": bool(v["w_max_lim_ena"]),
                            "q_mvar": v["var"], "var_pct": v["var_pct"], "var_enabled": bool(v["var_ena"])})
                if v["w_max"] <= 0:
                    row.update(available=False, reason=f"out of range: rating {v['w_max']:.3f} MW")
                elif int(v["status"]) & reg.ALARM:
                    row.update(available=False, reason="alarm")
            rows.append(row)
        self._down = None
        return pd.DataFrame(rows)

    def _write_confirmed(self, e, address: int, words: list[int], what: str) -> tuple[bool, str]:
        """Write ``words`` at ``address`` of one device and read them back: (confirmed, why not)."""
        try:
            c = self._client(e)
            w = c.write_registers(address, words, device_id=e.unit)
            if w.isError():
                return False, f"write refused: Modbus exception {getattr(w, 'exception_code', '?')}"
            r = c.read_holding_registers(address, count=len(words), device_id=e.unit)
        except Exception as exc:  # noqa: BLE001
            self._drop(e)
            return False, f"no answer: {type(exc).__name__}"
        if r.isError() or list(r.registers[:len(words)]) != words:
            return False, f"read-back differs from the {what} written"
        return True, ""

    def write_limit(self, sgen_id: str, pct: float | None) -> tuple[bool, str]:
        """Set an inverter's active-power limit in % of its rating (None: lift it), and read it back."""
        pct_v = 100.0 if pct is None else max(0.0, min(100.0, float(pct)))
        ok, why = self._write_confirmed(self.inverters[sgen_id], inv.LIMIT, inv.limit_words(pct_v, pct is not None),
                                        "limit")
        return (True, f"confirmed {pct_v:.2f} %" + ("" if pct is not None else " (limit lifted)")) if ok else (False, why)

    def write_var(self, sgen_id: str, pct: float | None) -> tuple[bool, str]:
        """Set an inverter's reactive power in % of its rating (+ injects; None: release it), read back."""
        pct_v = 0.0 if pct is None else max(-100.0, min(100.0, float(pct)))
        ok, why = self._write_confirmed(self.inverters[sgen_id], inv.VAR, inv.var_words(pct_v, pct is not None),
                                        "reactive setpoint")
        return (True, f"confirmed {pct_v:+.2f} % var" + ("" if pct is not None else " (released)")) if ok else (False, why)

    def read_fleet(self, now: float | None = None) -> pd.DataFrame:
        """One row per battery: the decoded registers, ``available`` and ``reason``."""
        rows = []
        self._down: set | None = set()
        for bid, e in self.endpoints.items():
            t = time.monotonic() if now is None else now
            v, why = self._read(e)
            row = {"battery_id": bid, "available": False, "reason": why}
            if v is not None:
                row.update({"soc_percent": v["soc"], "capacity_mwh": v["capacity"],
                            "p_charge_avail_mw": v["p_charge_avail"], "p_discharge_avail_mw": v["p_discharge_avail"],
                            "status": int(v["status"]), "alarm_code": int(v["alarm_code"]),
                            "heartbeat": int(v["heartbeat"]), "setpoint_mw": v["setpoint"],
                            "p_measured_mw": v["p_measured"]})
                row["reason"] = self._verdict(bid, v, t)
                row["available"] = row["reason"] is None
            rows.append(row)
        self._down = None
        df = pd.DataFrame(rows)
        if len(df):
            df["reason"] = df.reason.fillna("")
            df["energy_mwh"] = df.get("soc_percent", pd.Series(dtype=float)) / 100 * df.get("capacity_mwh", pd.Series(dtype=float))
        return df

    def _verdict(self, bid: str, v: dict, t: float) -> str | None:
        bad = []
        if not 0 <= v["soc"] <= 100:
            bad.append(f"SOC {v['soc']:.1f} %")
        if v["capacity"] <= 0:
            bad.append(f"capacity {v['capacity']:.3f} MWh")
        if v["p_charge_avail"] < 0 or v["p_discharge_avail"] < 0:
            bad.append("negative available power")
        if bad:
            return "out of range: " + ", ".join(bad)
        hb = int(v["heartbeat"])
        last = self._hb.get(bid)
        if last is None or last[0] != hb:
            self._hb[bid] = (hb, t)
        elif t - last[1] > self.stale_s:
            return f"stale heartbeat ({hb} for {t - last[1]:.0f} s)"
        status = int(v["status"])
        if status & reg.ALARM:
            return f"alarm {int(v['alarm_code'])}"
        if status & reg.UNAVAILABLE:
            return "not available (maintenance)"
        if not status & reg.REMOTE:
            return "remote control disabled"
        return None

    def write_setpoint(self, battery_id: str, mw: float) -> tuple[bool, str]:
        """Write the active-power setpoint (+ discharge) and read it back: (confirmed, detail)."""
        e = self.endpoints[battery_id]
        words = reg.to_words(round(mw / reg.SCALE["setpoint"]))
        try:
            c = self._client(e)
            w = c.write_registers(reg.SETPOINT, words, device_id=e.unit)
            if w.isError():
                return False, f"write refused: Modbus exception {getattr(w, 'exception_code', '?')}"
            r = c.read_holding_registers(reg.SETPOINT, count=2, device_id=e.unit)
        except Exception as exc:  # noqa: BLE001
            self._drop(e)
            return False, f"no answer: {type(exc).__name__}"
        if r.isError():
            return False, "read-back failed"
        back = reg.from_words(*r.registers[:2]) * reg.SCALE["setpoint"]
        if abs(back - mw) > 1e-6:
            return False, f"read back {back:.6f} MW, wrote {mw:.6f} MW"
        return True, f"confirmed {back:.6f} MW"


__all__ = ["BmsClient", "Endpoint"]
