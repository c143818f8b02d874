"""Day-ahead prices from an HTTP source into the price drop folder.

The source answers like the ENTSO-E Transparency Platform's REST API: ``GET {base_url}?documentType=A44
&in_Domain=Z&out_Domain=Z&periodStart=YYYYMMDDHHMM&periodEnd=YYYYMMDDHHMM[&securityToken=T]`` returns a
publication document (``sources/entsoe.py``). :func:`sync` asks for each delivery day that has been
published (12:00 Europe/Berlin the day before) and is not in the folder yet, checks the document, and
writes it as ``day_ahead_YYYYMMDD.xml`` beside the SMARD files, so the folder stays the one price store
every reader uses (``SmardFolder``). A document that is not prices goes to ``rejected/`` with its
reason; a source that does not answer leaves the folder as it is, and the plans go on with the last
known prices (filled and forecast beyond, flagged), with the outage in the notes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gridpipeline.sources.entsoe import DE_LU, EntsoeError, read_entsoe

TZ = "Europe/Berlin"


class PriceSourceDown(RuntimeError):
    """The HTTP source did not answer (after its retries), or refused the request."""


@dataclass
class EntsoeApi:
    """An ENTSO-E-style day-ahead price API. Timeouts per attempt, retries with exponential backoff
    on what may pass (connection errors, timeouts, HTTP 5xx and 429); a 4xx refusal is final."""

    base_url: str
    token: str = ""
    zone: str = DE_LU
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5

    def url(self, start: pd.Timestamp, end: pd.Timestamp) -> str:
        q = {"documentType": "A44", "in_Domain": self.zone, "out_Domain": self.zone,
             "periodStart": start.tz_convert("UTC").strftime("%Y%m%d%H%M"),
             "periodEnd": end.tz_convert("UTC").strftime("%Y%m%d%H%M")}
        if self.token:
            q["securityToken"] = self.token
        return self.base_url.rstrip("?") + "?" + urllib.parse.urlencode(q)

    def fetch(self, start: pd.Timestamp, end: pd.Timestamp) -> bytes:
        url = self.url(start, end)
        last = None
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=self.timeout_s) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                body = exc.read()
                last = f"HTTP {exc.code}"
                if exc.code == 400 and b"Acknowledgement_MarketDocument" in body:
                    return body  # the platform's "no data" answer: the reader names the reason
                if exc.code < 500 and exc.code != 429:
                    raise PriceSourceDown(f"the price source refused the request ({last})") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            if attempt < self.retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise PriceSourceDown(f"the price source did not answer after {self.retries + 1} attempts ({last})")


def delivery_window(day: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Delivery day ``day`` (a date, Europe/Berlin) as [start, end) in UTC: 23 to 25 hours."""
    d = pd.Timestamp(day).normalize()
    d = d.tz_localize(None) if d.tzinfo is not None else d
    return (d.tz_localize(TZ).tz_convert("UTC"), (d + pd.Timedelta(days=1)).tz_localize(TZ).tz_convert("UTC"))


def published_by(day: pd.Timestamp) -> pd.Timestamp:
    """When delivery day ``day``'s prices are published: 12:00 Europe/Berlin the day before (UTC)."""
    d = pd.Timestamp(day).normalize()
    d = d.tz_localize(None) if d.tzinfo is not None else d
    return (d - pd.Timedelta(days=1) + pd.Timedelta(hours=12)).tz_localize(TZ).tz_convert("UTC")


def sync(api: EntsoeApi, folder: Path, now: pd.Timestamp, days_back: int = 2) -> dict:
    """Fetch every delivery day from ``days_back`` days before today (Berlin) to tomorrow that is
    published by ``now`` and missing from ``folder``. Returns what happened: ``fetched`` (file names),
    ``rejected`` (name and reason: the document went to ``rejected/``), ``down`` (the source's failure,
    or None) and ``notes`` on what was read (a converted unit, missing positions)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = pd.Timestamp(now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    today = now.tz_convert(TZ).tz_localize(None).normalize()
    out: dict = {"fetched": [], "rejected": [], "down": None, "notes": []}
    for k in range(-days_back, 2):
        day = today + pd.Timedelta(days=k)
        name = f"day_ahead_{day:%Y%m%d}"
        if published_by(day) > now or (folder / f"{name}.csv").exists() or (folder / f"{name}.xml").exists():
            continue
        start, end = delivery_window(day)
        try:
            raw = api.fetch(start, end)
        except PriceSourceDown as exc:
            out["down"] = str(exc)  # the rest would fail the same way: the folder keeps what it has
            break
        try:
            doc = read_entsoe(raw)
        except EntsoeError as exc:
            rej = folder / "rejected"
            rej.mkdir(exist_ok=True)
            (rej / f"{name}.xml").write_bytes(raw)
            (rej / f"{name}.reason.txt").write_text(f"{exc}\n")
            out["rejected"].append({"file": f"{name}.xml", "reason": str(exc)})
            continue
        got = doc.prices.loc[(doc.prices.index >= start) & (doc.prices.index < end)]
        if got.dropna().empty:
            out["rejected"].append({"file": f"{name}.xml", "reason": "no price inside the delivery day"})
            continue
        out["notes"] += [f"{name}.xml: {f}" for f in doc.flags]
        tmp = folder / f".{name}.xml.part"
        tmp.write_bytes(raw)
        tmp.replace(folder / f"{name}.xml")  # whole or not at all: a reader never sees half a file
        out["fetched"].append(f"{name}.xml")
    return out


class PriceFeed:
    """Keeps the drop folder filled from an HTTP source, in a thread of its own, so that a slow or
    absent source never holds up a plan: a sync every ``every_s`` seconds (sooner after a failure is
    not tried: the source's own retries already ran). ``status`` is the last sync's result, with
    ``down_since`` while the source does not answer."""

    def __init__(self, api: EntsoeApi, folder: Path, every_s: float = 300.0, clock=None):
        import threading

        self.api, self.folder, self.every_s = api, Path(folder), float(every_s)
        self.clock = clock or (lambda: pd.Timestamp.now(tz="UTC"))
        self.status: dict = {"syncs": 0, "down_since": None, "last": None}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="price-feed", daemon=True)

    def start(self) -> PriceFeed:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def sync_once(self) -> dict:
        now = self.clock()
        try:
            r = sync(self.api, self.folder, now)
        except Exception as exc:  # noqa: BLE001 - a feed that fails must not stop: it says so and tries again
            r = {"fetched": [], "rejected": [], "down": f"{type(exc).__name__}: {exc}", "notes": []}
        if r["down"]:
            self.status["down_since"] = self.status["down_since"] or str(now)
        else:
            self.status["down_since"] = None
        self.status["syncs"] += 1
        self.status["last"] = {"at": str(now), **r}
        return r

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sync_once()
            self._stop.wait(self.every_s)
