"""dbt runs behind a wrapper that dies with its parent: a killed run leaves no dbt writing the store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import psutil

from gridpipeline.orchestration.child import die_with_parent
from gridpipeline.orchestration.resources import dbt_executable
from gridpipeline.settings import Settings


def test_the_child_dies_when_its_parent_is_killed(tmp_path):
    wrapper = die_with_parent(shutil.which("sleep"), tmp_path / "bin" / "sleep")
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.argv[1], '300']);"
                               " print(p.pid, flush=True); p.wait()", str(wrapper)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # let the wrapper exec into sleep
    assert psutil.Process(child).name() == "sleep"
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        psutil.Process(child).kill()
        raise AssertionError("the child outlived its killed parent")


def test_dbt_is_found_beside_the_interpreter_and_runs_through_the_wrapper(tmp_path):
    exe = dbt_executable(Settings(home=tmp_path))
    assert exe == str(tmp_path / "bin" / "dbt")
    assert "site-packages" not in exe and str(sys.executable.rsplit("/", 1)[0]) in (tmp_path / "bin" / "dbt").read_text()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "Core" in out.stdout + out.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead
        return fh.read().split()[2] != "Z"


def test_stop_all_takes_the_grandchildren_that_ignore_sigterm(tmp_path):
    """`gridpipeline dev` stops its children through their process groups: a child that exits on SIGTERM
    but leaves a grandchild ignoring it (as dagster dev's webserver, daemon or code server could) loses
    the grandchild too, killed after the timeout."""
    import signal
    import subprocess

    from gridpipeline.orchestration.child import spawn, stop_all

    pidfile = tmp_path / "grandchild.pid"
    # the grandchild writes its pid only once it ignores SIGTERM: on a loaded machine its interpreter
    # may not have started yet when the child is signalled, and it would die with the group
    grand = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)")
    code = ("import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {grand!r}])\n"
            "time.sleep(600)\n")
    child = spawn([sys.executable, "-c", code])
    for _ in range(600):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    assert _alive(grandchild)
    killed = stop_all([child], lambda p: signal.SIGTERM, timeout_s=2)
    assert killed == [child.pid]
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)
    assert child.poll() is not None
    # a child in its own group still dies with its supervisor (PR_SET_PDEATHSIG, SIGTERM)
    sup = subprocess.Popen([sys.executable, "-c",
                            "import sys, time; from gridpipeline.orchestration.child import spawn\n"
                            f"c = spawn([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
                            f"open({str(pidfile)!r}, 'w').write(str(c.pid)); time.sleep(600)"])
    pidfile.write_text("")
    for _ in range(200):
        if pidfile.read_text():
            break
        time.sleep(0.05)
    orphan = int(pidfile.read_text())
    sup.kill()
    sup.wait()
    for _ in range(200):  # a loaded machine (CI, a test suite beside a benchmark) can take seconds
        if not _alive(orphan):
            break
        time.sleep(0.1)
    if _alive(orphan):  # say why: the orphan's signal state (ignored, blocked, pending)
        status = open(f"/proc/{orphan}/status").read()
        os.kill(orphan, signal.SIGKILL)
        pytest.fail("the orphan outlived its supervisor: " + " ".join(
            line for line in status.splitlines() if line.startswith(("PPid", "SigIgn", "SigBlk", "SigPnd", "ShdPnd"))))


def test_batch_children_run_at_a_lower_cpu_priority_and_the_n1_thread_too():
    """`dev` starts Dagster and the history import at BATCH_NICE, so the live loop gets the core first;
    the loop's N-1 thread lowers its own priority."""
    import threading

    from gridpipeline.cli import BATCH_NICE
    from gridpipeline.orchestration.child import spawn
    from gridpipeline.orchestration.live_loop import _lower_priority

    base = os.nice(0)
    p = spawn([sys.executable, "-c", "import os; print(os.nice(0))"], nice=BATCH_NICE, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    assert int(out) == min(base + BATCH_NICE, 19)
    seen = []

    def worker():
        _lower_priority(10)
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen[0] >= 10 and os.nice(0) == base  # the thread only, not the process
