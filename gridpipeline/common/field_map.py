"""Where the field's devices answer: the addressing plan both sides of the wall share, as a utility's
device registry would hold it.

Battery sites and curtailable inverters are Modbus TCP units behind gateways on one host. A gateway
serves at most 247 unit ids, so units are numbered in the network model's order (``net.storage``,
then the curtailable ``net.sgen``) and filled into gateways of 247: battery gateway ``g`` listens on
``port + g``, inverter gateway ``g`` on ``port + INVERTER_OFFSET + g``; unit ids run 1..247.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_UNITS = 247
INVERTER_OFFSET = 50


@dataclass(frozen=True)
class Endpoint:
    """Where a device answers: gateway host, port and Modbus unit id."""

    device_id: str
    host: str
    port: int
    unit: int

    @property
    def battery_id(self) -> str:  # the BMS client's name for it
        return self.device_id


def endpoints(ids, host: str, port: int, offset: int = 0) -> list[Endpoint]:
    """Endpoints of ``ids`` in order, 247 per gateway from ``port + offset``."""
    return [Endpoint(str(d), host, port + offset + k // MAX_UNITS, k % MAX_UNITS + 1) for k, d in enumerate(ids)]


def chunks(items: list, size: int = MAX_UNITS) -> list[list]:
    return [items[k:k + size] for k in range(0, len(items), size)]


__all__ = ["INVERTER_OFFSET", "MAX_UNITS", "Endpoint", "chunks", "endpoints"]
