"""Neutral code that both the simulated world and the operator's pipeline use.

These modules describe shared *interfaces* (file layouts both sides agree on: the landing zone, the
weather provider's files) and *physics* that is true on both sides of the wall (PV and wind power
from the weather, the zones of a network by its topology). They import nothing of the project
except ``gridpipeline.common.*``, so depending on them never lets one side reach the other.
"""
