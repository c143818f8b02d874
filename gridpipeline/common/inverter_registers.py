"""The register map of the world's curtailable inverters (PV and wind), in the spirit of SunSpec
model 123 (immediate controls): an active-power limit in percent of the rating, with an enable flag,
and a reactive-power setpoint in percent of the rating (VArWMaxPct, + injects, - absorbs), with its
enable flag, as real PV inverters take them over Modbus TCP. The inverter keeps the reactive power
within its apparent-power rating (the rating is taken as S): |Q| <= sqrt(S^2 - P^2). Both sides of the wall speak it: the world serves it
(``world/bms.py``), the pipeline reads and writes it (``sources/bms.py``).

Every quantity is a signed 32-bit integer in two registers, high word first (as the BMS map).

| address | name | unit | access |
|---:|---|---|---|
| 0-1 | ``w`` | W, active power now | read |
| 2-3 | ``w_max`` | W, rating (WMax) | read |
| 4-5 | ``w_avail`` | W, what it could produce now without a limit | read |
| 6-7 | ``status`` | bits as the BMS map: 0 running, 1 alarm, 2 unavailable, 3 remote control | read |
| 8-9 | ``heartbeat`` | counter, +1 every second | read |
| 10-11 | ``w_max_lim_pct`` | 0.01 % of WMax (WMaxLimPct) | read/write |
| 12-13 | ``w_max_lim_ena`` | 1 = the limit applies (WMaxLim_Ena) | read/write |
| 14-15 | ``var_pct`` | 0.01 % of the rating, reactive power asked (VArWMaxPct; + injects) | read/write |
| 16-17 | ``var_ena`` | 1 = the reactive setpoint applies (VArPct_Ena) | read/write |
| 18-19 | ``var`` | var, reactive power now | read |
"""

from __future__ import annotations

from gridpipeline.common import bms_registers
from gridpipeline.common.bms_registers import to_words

FIELDS = ("w", "w_max", "w_avail", "status", "heartbeat", "w_max_lim_pct", "w_max_lim_ena", "var_pct", "var_ena", "var")
ADDRESS = {name: 2 * k for k, name in enumerate(FIELDS)}
COUNT = 2 * len(FIELDS)
LIMIT = ADDRESS["w_max_lim_pct"]  # the limit and its enable flag are written together (4 registers)
VAR = ADDRESS["var_pct"]  # the reactive setpoint and its enable flag, likewise
SCALE = {"w": 1e-6, "w_max": 1e-6, "w_avail": 1e-6, "status": 1, "heartbeat": 1, "w_max_lim_pct": 0.01,
         "w_max_lim_ena": 1, "var_pct": 0.01, "var_ena": 1, "var": 1e-6}  # to MW, %, flags, Mvar


def decode(registers: list[int]) -> dict[str, float]:
    return bms_registers.decode(registers, FIELDS, SCALE)


def encode(values: dict[str, float]) -> list[int]:
    return bms_registers.encode(values, FIELDS, SCALE)


def limit_words(pct: float, enabled: bool = True) -> list[int]:
    """The four registers that set WMaxLimPct and WMaxLim_Ena."""
    return to_words(round(pct / SCALE["w_max_lim_pct"])) + to_words(1 if enabled else 0)


def var_words(pct: float, enabled: bool = True) -> list[int]:
    """The four registers that set VArWMaxPct and VArPct_Ena."""
    return to_words(round(pct / SCALE["var_pct"])) + to_words(1 if enabled else 0)


__all__ = ["ADDRESS", "COUNT", "FIELDS", "LIMIT", "SCALE", "VAR", "decode", "encode", "limit_words", "var_words"]
