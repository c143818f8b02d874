"""Storage and VPP dispatch: the fleet, the rolling-horizon LP, the validation gate, curtailment
reasons, VPP envelopes and disaggregation. Pure functions on arrays and frames; ``assets.py`` wires
them to DuckDB, the BMS protocol and the ledger."""
