"""The stall watch (common/stall.py): a thread that keeps the GIL is seen, measured and named."""

from __future__ import annotations

import re
import threading
import time

from gridpipeline.common.stall import StallWatch


def _hold_the_gil() -> None:
    # the re module never releases the GIL: a catastrophic backtrack holds it for ~0.7-3 s
    re.match(r"(a+)+b", "a" * 25)


def test_a_thread_holding_the_gil_is_counted_and_its_stack_dumped(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDPIPELINE_STALL_DUMP", str(tmp_path / "stall"))
    w = StallWatch("test", threshold_s=0.3).start()
    time.sleep(0.2)
    assert w.stalls == 0
    th = threading.Thread(target=_hold_the_gil, name="gil-holder")
    th.start()
    th.join()
    time.sleep(0.2)
    w.stop()
    time.sleep(0.1)
    assert w.stalls >= 1 and w.worst_s >= 0.3
    dumps = list(tmp_path.glob("stall.test.*"))
    assert dumps, "faulthandler wrote no stacks"
    text = dumps[0].read_text()
    assert "_hold_the_gil" in text  # the stack of the thread that held it
