"""Metadata charts are real PNGs."""

from __future__ import annotations

import base64

import pandas as pd

from gridpipeline.base.plots import availability_by_zone


def test_availability_chart_is_an_embedded_png():
    health = pd.DataFrame({"zone": ["MV_Feeder1", "MV_Feeder1", "LV5.220"], "expected": [120, 120, 120],
                           "received": [120, 60, 0]})
    md = availability_by_zone(health, threshold=0.95)
    assert md.startswith("![availability by zone](data:image/png;base64,")
    png = base64.b64decode(md.split("base64,", 1)[1].rstrip(")"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
