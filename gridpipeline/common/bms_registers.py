"""The BMS register map that both sides of the wall speak (Modbus TCP holding registers, function
codes 3/16). The world serves it (``world/bms.py``); the pipeline reads and writes it
(``sources/bms.py``). A real site's map would differ; this one is documented here and in the README.

Every quantity is a signed 32-bit integer in two registers, high word first, scaled as below.

| address | name | unit | access |
|---:|---|---|---|
| 0-1 | ``soc`` | 0.01 % of capacity | read |
| 2-3 | ``capacity`` | Wh | read |
| 4-5 | ``p_charge_avail`` | W, charge power available now | read |
| 6-7 | ``p_discharge_avail`` | W, discharge power available now | read |
| 8-9 | ``status`` | bits: 0 running, 1 alarm, 2 unavailable (maintenance), 3 remote control enabled | read |
| 10-11 | ``alarm_code`` | site-specific code, 0 = none | read |
| 12-13 | ``heartbeat`` | counter, +1 every second while the controller runs | read |
| 14-15 | ``setpoint`` | W, active power, + discharge / - charge | read/write |
| 16-17 | ``p_measured`` | W, active power now, + discharge | read |
"""

from __future__ import annotations

FIELDS = ("soc", "capacity", "p_charge_avail", "p_discharge_avail", "status", "alarm_code", "heartbeat", "setpoint",
          "p_measured")
ADDRESS = {name: 2 * k for k, name in enumerate(FIELDS)}
COUNT = 2 * len(FIELDS)
SETPOINT = ADDRESS["setpoint"]
SCALE = {"soc": 0.01, "capacity": 1e-6, "p_charge_avail": 1e-6, "p_discharge_avail": 1e-6, "status": 1,
         "alarm_code": 1, "heartbeat": 1, "setpoint": 1e-6, "p_measured": 1e-6}  # to %, MWh, MW

RUNNING, ALARM, UNAVAILABLE, REMOTE = 1, 2, 4, 8


def to_words(value: int) -> list[int]:
    """A signed 32-bit integer as two 16-bit registers, high word first."""
    v = int(value) & 0xFFFFFFFF
    return [(v >> 16) & 0xFFFF, v & 0xFFFF]


def from_words(hi: int, lo: int) -> int:
    v = ((hi & 0xFFFF) << 16) | (lo & 0xFFFF)
    return v - (1 << 32) if v & 0x80000000 else v


def decode(registers: list[int], fields: tuple = FIELDS, scale: dict | None = None) -> dict[str, float]:
    """The raw registers of one unit -> engineering values (soc in %, energy in MWh, power in MW);
    ``fields``/``scale`` name another map of 32-bit fields (the inverters')."""
    scale = scale or SCALE
    return {name: from_words(registers[2 * k], registers[2 * k + 1]) * scale[name] for k, name in enumerate(fields)}


def encode(values: dict[str, float], fields: tuple = FIELDS, scale: dict | None = None) -> list[int]:
    """Engineering values -> the unit's registers (missing fields are 0)."""
    scale = scale or SCALE
    out: list[int] = []
    for name in fields:
        out += to_words(round(values.get(name, 0) / scale[name]))
    return out


__all__ = ["ADDRESS", "ALARM", "COUNT", "FIELDS", "REMOTE", "RUNNING", "SCALE", "SETPOINT", "UNAVAILABLE", "decode",
           "encode", "from_words", "to_words"]
