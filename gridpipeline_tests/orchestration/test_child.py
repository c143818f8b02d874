"""dbt runs behind a wrapper that dies with its parent: a killed run leaves no dbt writing the store."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

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
