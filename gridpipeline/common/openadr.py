"""What the utility's OpenADR 2.0b VTN and the customers' VENs agree on, beside the protocol itself: the
VENs' names and the programmes' market contexts (both sides import this; neither imports the other)."""

from __future__ import annotations

#: event-based programme: interruptible-load contracts, a SIMPLE level-1 signal over the event
EVENT_PROGRAMME = "oadr://gridpipeline/interruptible"
#: price-based programme: a day's tariff as an ELECTRICITY_PRICE signal (EUR/kWh), one interval per hour
PRICE_PROGRAMME = "oadr://gridpipeline/tou"


def contract_ven(load_id: int) -> str:
    """The VEN of the customer whose interruptible contract is on load ``load_id``."""
    return f"ven-load-{int(load_id)}"


def aggregator_ven(cls: str) -> str:
    """The VEN of the aggregator of class ``cls``'s price-responsive customers."""
    return f"ven-{cls}"


__all__ = ["EVENT_PROGRAMME", "PRICE_PROGRAMME", "aggregator_ven", "contract_ven"]
