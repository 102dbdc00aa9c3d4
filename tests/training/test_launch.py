"""The launcher streams the tool's output to the terminal and train.log, and Ctrl-C stops
the tool's whole process group."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from training.launch import LaunchPlan, run


def plan(tmp_path: Path, code: str) -> LaunchPlan:
    return LaunchPlan(
        tool_config={},
        config_path=tmp_path / "launch" / "c.yaml",
        command=[sys.executable, "-c", code],
        env={"CUDA_VISIBLE_DEVICES": ""},
        log_path=tmp_path / "train.log",
        run_json=tmp_path / "launch" / "run.json",
        cwd=tmp_path,
    )


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait for a reaper that never comes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def test_run_streams_output_and_returns_the_exit_code(tmp_path: Path) -> None:
    echo = io.StringIO()
    code = "import os; print('loss: 1.0'); print('cvd=' + repr(os.environ['CUDA_VISIBLE_DEVICES'])); raise SystemExit(3)"
    assert run(plan(tmp_path, code), echo=echo) == 3
    assert "loss: 1.0\ncvd=''\n" in echo.getvalue()
    assert "loss: 1.0" in (tmp_path / "train.log").read_text()


def test_ctrl_c_stops_the_process_group(tmp_path: Path) -> None:
    """A driver runs training.launch.run on a tool that spawns a grandchild; SIGINT to the
    driver must end the tool and its grandchild and exit 130."""
    grandchild_pid = tmp_path / "grandchild.pid"
    tool = textwrap.dedent(
        f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(grandchild_pid)!r}, "w").write(str(p.pid))
        print("started", flush=True)
        time.sleep(120)
        """
    )
    driver = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from training.launch import LaunchPlan, run
        p = Path({str(tmp_path)!r})
        plan = LaunchPlan({{}}, p / "c.yaml", [sys.executable, "-c", {tool!r}], {{}}, p / "train.log", p / "run.json", p)
        sys.exit(run(plan))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while not grandchild_pid.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=40) == 130
    pid = int(grandchild_pid.read_text())
    deadline = time.monotonic() + 10
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(pid), "the tool's child process survived Ctrl-C"
    assert "# interrupted by Ctrl-C" in (tmp_path / "train.log").read_text()
