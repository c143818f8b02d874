"""The world's events file (``<home>/world/events.json``): what happens in the field that the
pipeline must find out for itself. One JSON list; each entry has a ``kind``:

* ``pv`` / ``wind`` (the default ``pv``): a cloud front or a wind cut-out, for the simulator's
  30-second telemetry (``world.scada``);
* ``load_surge`` (``{"kind": "load_surge", "start": ISO, "minutes": 30, "factor": 2.5, "line": 12}``,
  or ``"loads": [ids]`` instead of the feeder ``line``): the loads behind a feeder draw ``factor``
  times their load (a heat wave, a factory starting up), in the telemetry and in the outstation's
  loading readings, so an element really goes over its rating;
* ``generation_loss``, ``frequency_glitch``, ``switch_fault``, ``breaker_trip``: for the IEC 104
  outstation (``world.outstation``);
* ``ven_silent`` (``{"kind": "ven_silent", "ven": "ven-load-104"}``): a demand-response customer whose
  VEN never answers (``world.ven``; read when the live simulator starts).

Both readers share :func:`read_events`, which reads the file again only when it changed, and never
takes a half-written file (its mtime is taken only after a successful parse, so it is read again)."""

from __future__ import annotations

import json
from pathlib import Path

FRONT_KINDS = ("pv", "wind")
SURGE_KINDS = ("load_surge",)
FIELD_KINDS = ("generation_loss", "frequency_glitch", "switch_fault", "breaker_trip")
VEN_KINDS = ("ven_silent",)


def read_events(path: Path | None, last_mtime: int | None) -> tuple[list[dict] | None, int | None]:
    """(the events, their mtime) when the file changed since ``last_mtime``; (None, last_mtime) when it
    did not, is missing, or is half-written or not a list of objects."""
    try:
        m = path.stat().st_mtime_ns
    except (OSError, AttributeError):
        return None, last_mtime
    if m == last_mtime:
        return None, last_mtime
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, last_mtime
    if not isinstance(events, list):
        return None, m
    return [e for e in events if isinstance(e, dict)], m
