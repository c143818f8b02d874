"""Economics: nodal prices, price signals, the market and settlement (issue 14)."""
