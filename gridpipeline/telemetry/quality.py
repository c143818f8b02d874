"""Quality codes of cleaned readings, in the spirit of IEC 61850-7-3 ``Quality``.

Every row of ``clean.clean_telemetry`` carries

- ``quality``: ``good`` | ``questionable`` | ``invalid`` | ``substituted`` (the validity, with
  IEC 61850's ``source=substituted`` folded in as its own state because operators read it so);
- ``quality_bits``: an integer of the reason bits below (several may be set).

The dbt models hard-code the same numbers; ``gridpipeline_tests`` checks they agree.
"""

from __future__ import annotations

from enum import IntFlag


class QualityBit(IntFlag):
    OUT_OF_RANGE = 1        # outside the plausible band for its kind (IEC: outOfRange)
    RATE_OF_CHANGE = 2      # changed faster than physically plausible (IEC: oscillatory)
    SPIKE = 4               # isolated excursion, removed and replaced (IEC: failure)
    STUCK = 8               # identical value over many samples (IEC: failure)
    FLATLINE = 16           # zero and unchanging where the peers are live (IEC: failure)
    OLD_DATA = 32           # arrived late / stale (IEC: oldData)
    GAP = 64                # no reading arrived for this slot
    INTERPOLATED = 128      # value filled by interpolation (IEC: source=substituted)
    UNIT_CONVERTED = 256    # exported in another unit and normalised
    DUPLICATE = 512         # several readings for the slot; the latest arrival won
    DRIFT = 1024            # deviates steadily from its peers (IEC: inaccurate)


QUALITIES = ("good", "questionable", "invalid", "substituted")


def describe(bits: int) -> list[str]:
    """Names of the reason bits set in ``bits``."""
    return [b.name.lower() for b in QualityBit if bits & b]
