"""`chanscale demo` end to end: the real local stack, a short bursty run, the outputs, and no leaked processes.

The demo runs as a child process exactly as `make demo` runs it. Every process it starts inherits a marker
environment variable, so after it exits the test can prove that none of them is left running (children are in
their own sessions, so looking at the process tree is not enough once the demo has gone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from chanscale.local.binaries import REPO_ROOT

pytestmark = pytest.mark.integration

MARKER = "CHANSCALE_DEMO_TEST_RUN"


def processes_with_marker(value: str) -> list[str]:
    """Command lines of live processes whose environment carries ``MARKER=value``."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def wait_no_leftovers(value: str, timeout: float = 15.0) -> list[str]:
    """Bounded wait for the marked processes to disappear (SIGKILLed groups are reaped asynchronously)."""
    deadline = time.monotonic() + timeout
    left = processes_with_marker(value)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = processes_with_marker(value)
    return left


def demo_env(value: str) -> dict[str, str]:
    env = dict(os.environ, **{MARKER: value})
    env["PATH"] = f"{REPO_ROOT / 'bin'}:{env.get('PATH', '')}"
    env.pop("KUBECONFIG", None)
    return env


def test_short_demo_scales_up_writes_plot_and_summary_and_leaks_nothing(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run_id = uuid.uuid4().hex
    argv = [sys.executable, "-m", "chanscale", "demo", "--duration", "40", "--no-tui", "--out", str(out)]
    try:
        res = subprocess.run(argv, env=demo_env(run_id), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    finally:
        leftovers = wait_no_leftovers(run_id)
    report = f"exit {res.returncode}\n--- stdout ---\n{res.stdout[-6000:]}\n--- stderr ---\n{res.stderr[-4000:]}"
    if res.returncode == 2 and "make tools" in res.stderr:
        pytest.fail(f"the demo needs the local binaries: run `make tools`.\n{res.stderr}", pytrace=False)
    assert res.returncode == 0, report
    assert not leftovers, f"processes left running after the demo exited: {leftovers}"

    png = out / "demo.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", report
    summary = (out / "summary.md").read_text()
    assert "chanscale demo" in summary and "Replicas:" in summary
    doc = json.loads((out / "samples.json").read_text())
    replicas = [s["replicas"] for s in doc["samples"] if s["replicas"] is not None]
    assert replicas, report
    assert max(replicas) > replicas[0], f"replicas never went up during the burst: {replicas}\n{report}"
    assert doc["summary"]["scaleUps"] >= 1
    # The plain view printed progress lines and the run ended with the summary and the explanation.
    assert "arrivals=" in res.stdout and "backlog=" in res.stdout
    assert "$ chanscale explain chanscale-demo/orders" in res.stdout
    assert (out / "logs" / "operator.log").is_file()


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_tears_everything_down_and_keeps_a_partial_plot(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    run_id = uuid.uuid4().hex
    argv = [sys.executable, "-m", "chanscale", "demo", "--duration", "300", "--no-tui", "--out", str(out)]
    proc = subprocess.Popen(
        argv,
        env=demo_env(run_id),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        # Ctrl-C as a terminal delivers it: a run started in the background (`cmd &` without job control, as a CI
        # runner may) inherits SIGINT ignored, and Python then never installs its KeyboardInterrupt handler.
        preexec_fn=_sigint_default,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 300
        # Wait (bounded) until the trace is running and a few samples exist.
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("t=") and not line.startswith("t=    0s"):
                break
        assert any(ln.startswith("t=") for ln in lines), "the demo never started its trace:\n" + "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        lines.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftovers = wait_no_leftovers(run_id)
    text = "".join(lines)
    assert proc.returncode == 130, text
    assert not leftovers, f"processes left running after Ctrl-C: {leftovers}\n{text}"
    assert "interrupted" in text
    assert (out / "demo.png").is_file(), text
    assert json.loads((out / "samples.json").read_text())["interrupted"] is True
