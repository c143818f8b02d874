"""A watch on a process's Python threads: how late a 50-ms tick wakes up.

A process that must answer in a second (the responder, the field's IEC 104 outstation) can be held up
by its own other threads: a thread inside a long C call that keeps the GIL (a pandas conversion, a
query result turned into a frame) stops every other Python thread, including the one that reads or
sends the next message. A tick thread measures it: each time it wakes more than ``threshold_s`` late,
the stall is counted and logged with its length.

Where the stall comes from is answered by ``faulthandler`` (``GRIDPIPELINE_STALL_DUMP=<file>``): the
tick re-arms ``faulthandler.dump_traceback_later`` every tick, and the C watchdog, which needs no GIL,
writes every thread's stack to the file when the tick has not re-armed it within ``threshold_s``; the
thread holding the GIL is the one that is not waiting.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

TICK_S = 0.05


@dataclass
class StallWatch:
    name: str
    threshold_s: float = 0.3
    stalls: int = 0
    worst_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> StallWatch:
        path = os.environ.get("GRIDPIPELINE_STALL_DUMP")
        self._dump = open(f"{path}.{self.name}.{os.getpid()}", "a") if path else None  # noqa: SIM115
        threading.Thread(target=self._run, name=f"stall-watch-{self.name}", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            if self._dump is not None:
                faulthandler.dump_traceback_later(self.threshold_s, repeat=False, file=self._dump)
            self._stop.wait(TICK_S)
            now = time.monotonic()
            late = now - last - TICK_S
            last = now
            if late > self.threshold_s:
                self.stalls += 1
                self.worst_s = max(self.worst_s, late)
                log.warning("%s: its Python threads stalled for %.2f s (stall %d; the worst %.2f s)", self.name,
                            late, self.stalls, self.worst_s)
        if self._dump is not None:
            faulthandler.cancel_dump_traceback_later()
            self._dump.close()


__all__ = ["StallWatch"]
