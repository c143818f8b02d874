"""``gridpipeline load import-limit``: an import limit instruction (a transmission operator's, or the
operator's own) that the live dispatcher plans within and sheds load for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Optional

import typer

load_app = typer.Typer(no_args_is_help=True, help="Load management: import limit instructions.")


def import_limit_record(mw: float | None, minutes: float | None, operator: str, reason: str,
                        start: datetime | None = None, release: bool = False, now: datetime | None = None) -> dict:
    """The body of an ``import_limit`` ledger record; raises ValueError on a bad request."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    if not operator.strip():
        raise ValueError("an operator name is required: the ledger records who instructed")
    if release:
        return {"released": True, "summary": f"import limit released by {operator}", "reason": reason}
    if mw is None or mw < 0:
        raise ValueError("--mw is required and must be at least 0")
    if minutes is not None and minutes <= 0:
        raise ValueError("--minutes must be positive")
    start = start or now
    until = start + timedelta(minutes=minutes) if minutes else None
    return {"mw": float(mw), "start": start.isoformat(timespec="seconds"),
            "until": until.isoformat(timespec="seconds") if until else None, "reason": reason,
            "summary": f"import limited to {mw:g} MW from {start:%Y-%m-%d %H:%M} UTC"
                       + (f" for {minutes:g} min" if minutes else " until released") + f" ({reason or 'no reason given'})"}


@load_app.command("import-limit")
def import_limit(
    mw: Optional[float] = typer.Option(None, "--mw", help="The most the grid may import, MW."),
    minutes: Optional[float] = typer.Option(None, help="How long it holds (default: until released)."),
    in_minutes: float = typer.Option(0.0, "--in", help="It starts this many minutes from now (an announced limit)."),
    operator: str = typer.Option(..., "--operator", help="Who instructs (recorded in the ledger)."),
    reason: str = typer.Option("", help="Why, e.g. 'TSO instruction 4711' (recorded in the ledger)."),
    release: bool = typer.Option(False, "--release", help="End the instruction now."),
):
    """Record an import limit instruction in the ledger. The live dispatcher plans the batteries within
    it from its start, and where they cannot cover the load, proposes a shed schedule (shed_schedule)."""
    from gridpipeline.ledger.store import Ledger
    from gridpipeline.settings import get_settings

    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        body = import_limit_record(mw, minutes, operator, reason, now + timedelta(minutes=in_minutes), release, now)
    except ValueError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2)
    rec = Ledger(get_settings().ledger).append("import_limit", body, mode="automatic", actor=operator)
    typer.echo(body["summary"], err=True)
    typer.echo(json.dumps({"decision": rec.id, **body}))


@load_app.command("restore")
def restore(
    block: list[int] = typer.Option(..., "--block", help="A block to restore (repeat for more)."),
    operator: str = typer.Option(..., "--operator", help="Who decides (recorded in the ledger)."),
    reason: str = typer.Option("", help="Why, e.g. 'crew on site, feeder checked' (recorded in the ledger)."),
):
    """Restore blocks the responder holds out (a restoration stage its power flow held for an operator,
    or blocks left out by an event): a ``restore_request`` record the responder carries out within
    about ten seconds, closing the blocks' switches over IEC 104 and recording the ``restoration``."""
    from gridpipeline.ledger.store import Ledger
    from gridpipeline.settings import get_settings

    if not operator.strip():
        typer.secho("an operator name is required: the ledger records who decided", fg="red", err=True)
        raise typer.Exit(2)
    body = {"blocks": sorted(set(int(b) for b in block)), "reason": reason,
            "summary": f"restore blocks {', '.join(map(str, sorted(set(block))))} requested by {operator}"
                       + (f" ({reason})" if reason else "")}
    rec = Ledger(get_settings().ledger).append("restore_request", body, mode="automatic", actor=operator.strip())
    typer.echo(body["summary"], err=True)
    typer.echo(json.dumps({"decision": rec.id, **body}))
