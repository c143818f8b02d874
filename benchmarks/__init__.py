"""Benchmarks, run as ``uv run gridpipeline bench NAME``; each prints one JSON line of figures.

Results and the machine they ran on are recorded in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from typing import Callable


def _ingest(**kw) -> dict:
    from benchmarks.ingest import run

    return run(**kw)


def _estimate(**kw) -> dict:
    from benchmarks.estimate import run

    return run(**kw)


def _contingency(**kw) -> dict:
    from benchmarks.contingency import run

    return run(**kw)


def _forecast(**kw) -> dict:
    from benchmarks.forecast import run

    return run(**kw)


def _loop(**kw) -> dict:
    from benchmarks.loop import run

    return run(**kw)


def _dispatch(**kw) -> dict:
    from benchmarks.dispatch import run

    return run(**kw)


def _replan(**kw) -> dict:
    from benchmarks.replan import run

    return run(**kw)


def _shed(**kw) -> dict:
    from benchmarks.shed import run

    return run(**kw)


def _prices(**kw) -> dict:
    from benchmarks.prices import run

    return run(**kw)


def _responder(**kw) -> dict:
    from benchmarks.responder import run

    return run(**kw)


REGISTRY: dict[str, Callable[..., dict]] = {
    "prices": _prices,
    "responder": _responder,
    "shed": _shed,
    "replan": _replan,
    "dispatch": _dispatch,
    "loop": _loop,
    "forecast": _forecast,
    "ingest": _ingest,
    "estimate": _estimate,
    "contingency": _contingency,
}
