"""Telemetry: sensor registry, SCADA simulator, landing zone, validation and cleaning."""
