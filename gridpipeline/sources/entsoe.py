"""Day-ahead prices as ENTSO-E Transparency publication documents (IEC 62325-451-3, document type A44).

The Transparency Platform answers a day-ahead price query with a ``Publication_MarketDocument``: one
or more ``TimeSeries`` (bidding zone, currency, price unit, curve type), each with ``Period`` blocks
(a UTC ``timeInterval``, a ``resolution`` such as ``PT60M`` or ``PT15M``) of ``Point`` s (``position``
from 1, ``price.amount``). With curve type ``A03`` a point is left out when the price repeats; with
``A01`` every position is sent, so a missing one is a missing price. When it has nothing, the platform
answers an ``Acknowledgement_MarketDocument`` with a reason.

:func:`read_entsoe` turns a document into hourly EUR/MWh on UTC (quarter-hours are averaged, flagged)
and says what it found wrong; :func:`write_entsoe` builds a document from an hourly series, the way
the tests and the simulated exchange build them from the SMARD numbers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import pandas as pd

NS = "urn:iec62325.351:tc57wg16:451-3:publicationdocument:7:3"
#: bidding zone Germany-Luxembourg (from October 2018; before it, DE-AT-LU was 10Y1001A1001A63L)
DE_LU = "10Y1001A1001A82H"
_RESOLUTION = {"PT15M": timedelta(minutes=15), "PT30M": timedelta(minutes=30), "PT60M": timedelta(hours=1),
               "P1D": timedelta(days=1)}


class EntsoeError(ValueError):
    """The document cannot be read as day-ahead prices (malformed, an acknowledgement, a currency or
    unit it cannot convert); the message says which."""


@dataclass
class PriceDocument:
    """Hourly EUR/MWh on UTC (NaN where an hour has no price), and what was noticed on the way."""

    prices: pd.Series
    zone: str = ""
    flags: list[str] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element, name: str, default: str | None = None) -> str:
    c = _child(el, name)
    if c is None or c.text is None:
        if default is not None:
            return default
        raise EntsoeError(f"<{_local(el.tag)}> has no <{name}>")
    return c.text.strip()


def _instant(s: str) -> pd.Timestamp:
    t = pd.Timestamp(s)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def read_entsoe(data: bytes | str) -> PriceDocument:
    """A publication document -> :class:`PriceDocument`. Raises :class:`EntsoeError` for what cannot be
    prices (malformed XML, a document type other than A44, an acknowledgement, a currency other than
    EUR, an unknown unit or resolution). Converted or doubtful values are flagged, never dropped
    silently: a price per kWh is converted to per MWh; a missing position of an ``A01`` curve is a
    missing hour (NaN); a duplicate hour keeps the later document's value."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if b"<!DOCTYPE" in raw[:2048].upper() or b"<!ENTITY" in raw.upper():
        raise EntsoeError("the document declares a DTD or entities: refused (a publication document has none)")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise EntsoeError(f"malformed XML: {exc}") from exc
    kind = _local(root.tag)
    if kind == "Acknowledgement_MarketDocument":
        reason = _child(root, "Reason")
        text = _text(reason, "text", "") if reason is not None else ""
        code = _text(reason, "code", "") if reason is not None else ""
        raise EntsoeError(f"the platform acknowledged without data ({code} {text})".strip())
    if kind != "Publication_MarketDocument":
        raise EntsoeError(f"not a publication document: <{kind}>")
    doc_type = _text(root, "type", "")
    if doc_type and doc_type != "A44":
        raise EntsoeError(f"document type {doc_type}, not A44 (day-ahead prices)")
    flags: list[str] = []
    values: dict[pd.Timestamp, list[float]] = {}
    zone = ""
    fine = False
    for ts in (c for c in root if _local(c.tag) == "TimeSeries"):
        zone = zone or _text(ts, "in_Domain.mRID", "")
        cur = _text(ts, "currency_Unit.name", "EUR").upper()
        if cur != "EUR":
            raise EntsoeError(f"prices in {cur}: only EUR is read (no exchange rates here)")
        unit = _text(ts, "price_Measure_Unit.name", "MWH").upper()
        scale = {"MWH": 1.0, "KWH": 1000.0}.get(unit)
        if scale is None:
            raise EntsoeError(f"price unit {unit}: expected MWH (or KWH, converted)")
        if scale != 1.0:
            flags.append(f"prices per {unit.lower()} converted to EUR/MWh (x{scale:g})")
        curve = _text(ts, "curveType", "A01")
        for per in (c for c in ts if _local(c.tag) == "Period"):
            ti = _child(per, "timeInterval")
            if ti is None:
                raise EntsoeError("a <Period> without <timeInterval>")
            start, end = _instant(_text(ti, "start")), _instant(_text(ti, "end"))
            res = _text(per, "resolution")
            step = _RESOLUTION.get(res)
            if step is None:
                raise EntsoeError(f"resolution {res} not understood")
            fine = fine or step < timedelta(hours=1)
            n = round((end - start) / step)
            got = np.full(n, np.nan)
            for pt in (c for c in per if _local(c.tag) == "Point"):
                try:
                    pos = int(_text(pt, "position"))
                    val = float(_text(pt, "price.amount"))
                except ValueError as exc:
                    flags.append(f"a point that is not a number dropped ({exc})")
                    continue
                if not 1 <= pos <= n:
                    flags.append(f"position {pos} outside its period of {n} dropped")
                    continue
                got[pos - 1] = val * scale
            if curve == "A03":  # a left-out position repeats the price before it
                got = pd.Series(got).ffill().to_numpy()
            missing = int(np.isnan(got).sum())
            if missing:
                flags.append(f"{missing} of {n} positions of the period from {start:%Y-%m-%d %H:%M}Z without a price")
            for k in range(n):
                values.setdefault(start + k * step, []).append(got[k])
    if not values:
        raise EntsoeError("a publication document without any price")
    dup = sum(len(v) - 1 for v in values.values())
    if dup:
        flags.append(f"{dup} instants priced twice: the later value kept")
    s = pd.Series({t: v[-1] for t, v in values.items()}, dtype=float).sort_index()
    s.index = pd.DatetimeIndex(s.index).tz_convert("UTC")
    if fine:
        flags.append("sub-hourly prices averaged to hours")
        s = s.resample("h").mean()
    s.name = "price"
    return PriceDocument(s, zone, flags)


def write_entsoe(prices: pd.Series, zone: str = DE_LU, curve: str = "A01", created: pd.Timestamp | None = None,
                 unit: str = "MWH") -> bytes:
    """An hourly series (UTC index, EUR/MWh) -> a publication document with one period from its first
    hour to the end of its last (a delivery day is 23:00Z to 23:00Z in winter); NaN hours are left out
    (``A01``: a missing price; ``A03``: the repeated price the curve type allows). ``unit="KWH"``
    writes EUR/kWh (for the wrong-unit case)."""
    s = prices.sort_index()
    idx = pd.DatetimeIndex(s.index)
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    s = pd.Series(s.to_numpy(float), index=idx)
    created = created or pd.Timestamp.now(tz="UTC")
    fmt = "%Y-%m-%dT%H:%MZ"
    q = lambda name: f"{{{NS}}}{name}"
    root = ET.Element(q("Publication_MarketDocument"))
    for tag, text in (("mRID", f"gridpipeline-{idx[0]:%Y%m%d%H}"), ("revisionNumber", "1"), ("type", "A44")):
        ET.SubElement(root, q(tag)).text = text
    ET.SubElement(root, q("createdDateTime")).text = created.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    iv = ET.SubElement(root, q("period.timeInterval"))
    ET.SubElement(iv, q("start")).text = idx[0].strftime(fmt)
    ET.SubElement(iv, q("end")).text = (idx[-1] + pd.Timedelta(hours=1)).strftime(fmt)
    ts = ET.SubElement(root, q("TimeSeries"))
    for tag, text in (("mRID", "1"), ("auction.type", "A01"), ("businessType", "A62"), ("in_Domain.mRID", zone),
                      ("out_Domain.mRID", zone), ("contract_MarketAgreement.type", "A01"),
                      ("currency_Unit.name", "EUR"), ("price_Measure_Unit.name", unit), ("curveType", curve)):
        ET.SubElement(ts, q(tag)).text = text
    scale = 1000.0 if unit.upper() == "KWH" else 1.0
    start, end = idx[0], idx[-1] + pd.Timedelta(hours=1)
    per = ET.SubElement(ts, q("Period"))
    ti = ET.SubElement(per, q("timeInterval"))
    ET.SubElement(ti, q("start")).text = start.strftime(fmt)
    ET.SubElement(ti, q("end")).text = end.strftime(fmt)
    ET.SubElement(per, q("resolution")).text = "PT60M"
    last = None
    for t, v in s.items():
        if not np.isfinite(v) or (curve == "A03" and last is not None and v == last):
            continue
        pt = ET.SubElement(per, q("Point"))
        ET.SubElement(pt, q("position")).text = str(int((t - start) / pd.Timedelta(hours=1)) + 1)
        ET.SubElement(pt, q("price.amount")).text = f"{v / scale:.6g}" if scale != 1.0 else f"{v:.2f}"
        last = v
    ET.register_namespace("", NS)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
