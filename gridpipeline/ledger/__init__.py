"""The decision ledger: every plan, gate verdict, setpoint, shed, price, bid and approval as an
append-only, hash-chained record with its justification (``store.Ledger``)."""
