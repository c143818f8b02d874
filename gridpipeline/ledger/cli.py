"""``gridpipeline audit verify`` and ``gridpipeline decisions list|approve|reject``."""

from __future__ import annotations

import json

import typer

audit_app = typer.Typer(no_args_is_help=True, help="Integrity of the decision ledger.")
decisions_app = typer.Typer(no_args_is_help=True, help="Decisions in the ledger: list, approve, reject.")


def _ledger():
    from gridpipeline.ledger.store import Ledger
    from gridpipeline.settings import ConfigurationError, get_settings

    try:
        return Ledger(get_settings().ledger)
    except ConfigurationError as exc:
        typer.secho(f"configuration error: {exc}", fg="red", err=True)
        raise typer.Exit(2)


@audit_app.command("verify")
def verify():
    """Recompute every record's hash and the chain, check the newest against the head kept outside the
    ledger; name the first broken record. Exit status 1 when broken."""
    led = _ledger()
    rep = led.verify()
    typer.echo(rep.summary())
    for chain, c in sorted(rep.chains.items()):
        typer.echo(f"  {chain}: {c['records']} records, head {c['head'][:16]}")
    raise typer.Exit(0 if rep.ok else 1)


@decisions_app.command("list")
def list_(state: str = typer.Option("", help="Only this state: pending, approved, rejected, expired, automatic, "
                                              "advisory."),
          limit: int = typer.Option(50, help="The newest this many."),
          as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")):
    """Decisions with their mode and state, newest last."""
    st = _ledger().status()
    if state:
        st = st[st.state == state]
    st = st.tail(limit)
    if as_json:
        for r in st.to_dict("records"):
            typer.echo(json.dumps(r, default=str))
        return
    if not len(st):
        typer.echo("no decisions" + (f" in state {state}" if state else ""))
        return
    for r in st.itertuples():
        extra = f" by {r.settled_by}" if r.settled_by else (f" (expires {r.expires_at})" if r.state == "pending" else "")
        typer.echo(f"{r.id}  {r.created_at:%Y-%m-%d %H:%M:%S}  {r.kind:<16} {r.mode or '-':<9} {r.state}{extra}  "
                   f"{r.summary}")


def _settle(action: str, decision_id: str, operator: str, reason: str = "") -> None:
    from gridpipeline.ledger.store import LedgerError

    led = _ledger()
    try:
        rec = led.approve(decision_id, operator) if action == "approve" else led.reject(decision_id, operator, reason)
    except LedgerError as exc:
        typer.secho(f"refused: {exc}", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{action}d {decision_id} as {operator} (ledger record {rec.seq}, {rec.id})")


@decisions_app.command("approve")
def approve(decision_id: str = typer.Argument(..., help="The decision's id (decisions list)."),
            operator: str = typer.Option(..., help="Who approves.")):
    """Approve a pending decision; its setpoints are sent on the next cycle if the gate still passes."""
    _settle("approve", decision_id, operator)


@decisions_app.command("reject")
def reject(decision_id: str = typer.Argument(..., help="The decision's id (decisions list)."),
           operator: str = typer.Option(..., help="Who rejects."),
           reason: str = typer.Option("", help="Why.")):
    """Reject a pending decision; nothing is sent for it."""
    _settle("reject", decision_id, operator, reason)
