"""The IEC 60870-5-104 address plan shared by the simulator's outstation and the responder, and the
mapping of IEC 104 quality descriptors onto the project's quality codes.

One station (common address ``COMMON_ADDRESS``) per field; information object addresses:

=====================  ==========  =============================================================
IOA                    type        what
=====================  ==========  =============================================================
``IOA_FREQUENCY``      M_ME_TF_1   system frequency (Hz), float with CP56Time2a time tag
``IOA_GENERATION``     M_ME_TF_1   local generation (MW) at the substation
``STATUS + s``         M_SP_TB_1   controllable switch ``s`` closed (True) / open, time-tagged
``COMMAND + s``        C_SC_NA_1   single command to switch ``s`` (True close, False open),
                                   select-before-operate
``LOADING_TRAFO + k``  M_ME_TF_1   loading of transformer ``k`` (% of its rating)
``LOADING_LINE + k``   M_ME_TF_1   loading of feeder-head line ``k`` (% of its rating)
=====================  ==========  =============================================================

Quality descriptors (IEC 60870-5-101 7.2.6.3) onto ``clean_telemetry``'s codes: IV (invalid) and BL
(blocked: the value is frozen at the source) -> ``invalid``; SB (substituted by an operator or an
automatic source) -> ``substituted``; NT (not topical: not updated successfully) and OV (overflow)
-> ``questionable``; none set -> ``good``. Only ``good`` readings are acted on.
"""

from __future__ import annotations

COMMON_ADDRESS = 1
IOA_FREQUENCY = 100
IOA_GENERATION = 101
STATUS = 100_000
COMMAND = 200_000
LOADING_TRAFO = 300_000
LOADING_LINE = 400_000
DEFAULT_PORT = 2404


def feeder_heads(net) -> list[int]:
    """Lines leaving a busbar an HV/MV (or MV/LV substation) transformer feeds: the feeder heads whose
    loading the outstation reports."""
    lv = set(net.trafo.lv_bus.astype(int))
    ln = net.line[net.line.in_service.astype(bool)]
    return sorted(int(i) for i, r in ln.iterrows() if int(r.from_bus) in lv or int(r.to_bus) in lv)


def quality_code(invalid: bool = False, not_topical: bool = False, substituted: bool = False,
                 blocked: bool = False, overflow: bool = False) -> str:
    """The project's quality code for a reading with these IEC 104 quality bits set."""
    if invalid or blocked:
        return "invalid"
    if substituted:
        return "substituted"
    if not_topical or overflow:
        return "questionable"
    return "good"


def quality_of(q) -> str:
    """:func:`quality_code` of a ``c104.Quality``."""
    import c104

    if q is None:
        return "good"
    Q = c104.Quality

    def has(flag) -> bool:
        return (q & flag).is_any()

    return quality_code(invalid=has(Q.Invalid), not_topical=has(Q.NonTopical), substituted=has(Q.Substituted),
                        blocked=has(Q.Blocked), overflow=has(Q.Overflow))
