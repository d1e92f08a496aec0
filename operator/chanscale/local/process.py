"""Child-process plumbing shared by the local test infrastructure (cluster, Prometheus, Argo CD, the operator).

Every program is started in its own session (process group) with its output captured to a log file, so that
stopping it kills everything it spawned and a failing test can show what the program said. An ``atexit`` hook
kills whatever is still running when the interpreter exits, as a safety net against leaked processes when a test
run is interrupted. :class:`ManagedGroup` is the lifecycle the fixtures made of several programs share.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

LOOPBACK = "127.0.0.1"

_LIVE: set[ManagedProcess] = set()
_Group = TypeVar("_Group", bound="ManagedGroup")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it, so parallel runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class ProcessFailed(RuntimeError):
    """A child process exited early or did not become ready; the message carries the tail of its log."""


class ManagedProcess:
    """One child program in its own process group, with stdout+stderr appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> ManagedProcess:
        """Start the program; returns self so ``proc = ManagedProcess(...).start()`` reads naturally."""
        if self._popen is not None:
            raise RuntimeError(f"{self.name} already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self._popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        _LIVE.add(self)
        return self

    def poll(self) -> int | None:
        """The exit code, or None while running (or never started)."""
        return self._popen.poll() if self._popen else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def check_running(self) -> None:
        """Raise :class:`ProcessFailed` with the log tail if the program has exited."""
        if self._popen is None:
            raise ProcessFailed(f"{self.name} was never started")
        code = self._popen.poll()
        if code is not None:
            raise ProcessFailed(f"{self.name} exited with code {code}; last log lines:\n{self.log_tail()}")

    def log_text(self) -> str:
        """The whole captured log (empty if nothing was written yet)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _signal_group(self, sig: int) -> None:
        assert self._popen is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the whole process group, then SIGKILL it after ``timeout`` seconds; idempotent."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(timeout=timeout)
        # Children that outlived the leader (same group) must not leak either.
        self._signal_group(signal.SIGKILL)
        _LIVE.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the group at once (crash simulation, or cleanup when there is no time to be polite)."""
        if self._popen is not None:
            self._signal_group(signal.SIGKILL)
            self._popen.wait(timeout=10)
        self.stop()


class ManagedGroup:
    """Programs started in order and stopped in reverse order as one unit, e.g. etcd before kube-apiserver.

    A subclass starts its programs in :meth:`_start` with :meth:`_spawn`, waiting for each before the next (a
    later one may need an earlier one). :meth:`start` times that and, if it fails, stops whatever had started
    before re-raising; :meth:`stop` stops the programs (whole process groups, in reverse order), then calls
    :meth:`_cleanup` (e.g. to remove the work directory). ``with Fixture() as f:`` starts and stops it.
    """

    #: Lines of each program's log that :meth:`logs` returns.
    log_lines = 40
    #: What the group is called in errors ("control plane not started").
    label = "programs"
    #: The group's scratch directory (set by the subclass: None until it is made, or after it is removed).
    workdir: Path | None

    def __init__(self) -> None:
        self._procs: list[ManagedProcess] = []
        self.startup_seconds = 0.0

    @property
    def dir(self) -> Path:
        """:attr:`workdir`, which must exist by now."""
        if self.workdir is None:
            raise RuntimeError(f"{self.label} not started")
        return self.workdir

    @property
    def processes(self) -> list[ManagedProcess]:
        """The programs running now, in start order."""
        return list(self._procs)

    def _start(self) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        """Called by :meth:`stop` once every program has stopped; nothing by default."""

    def start(self: _Group) -> _Group:
        """Start every program; returns self once all are ready, sets :attr:`startup_seconds`."""
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every program (reverse start order), then clean up; idempotent."""
        self.stop_processes()
        self._cleanup()

    def stop_processes(self, name: str | None = None) -> None:
        """Stop the programs (only the one called ``name`` when given), last started first."""
        for proc in reversed(self._procs):
            if name is None or proc.name == name:
                proc.stop()
        self._procs = [p for p in self._procs if name is not None and p.name != name]

    def __enter__(self: _Group) -> _Group:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def check_running(self) -> None:
        """Raise :class:`ProcessFailed` (with its log tail) if any program has died."""
        for proc in self._procs:
            proc.check_running()

    def logs(self) -> dict[str, str]:
        """The tail of every program's log, for failure reports."""
        return {p.name: p.log_tail(self.log_lines) for p in self._procs}

    def _spawn(
        self, name: str, argv: Sequence[str | os.PathLike[str]], log_path: Path, env: Mapping[str, str] | None = None
    ) -> ManagedProcess:
        """Start one more program of the group (stopped with it)."""
        proc = ManagedProcess(name, argv, log_path, env=env).start()
        self._procs.append(proc)
        return proc


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    procs: Sequence[ManagedProcess] = (),
    interval: float = 0.1,
) -> float:
    """Poll ``check`` until it returns True; returns the seconds waited.

    Raises :class:`ProcessFailed` early, with the log tail, if one of ``procs`` dies meanwhile (waiting out the
    timeout on a crashed program only hides the reason), and with the same detail when the time is up.
    """
    start = time.monotonic()
    deadline = start + timeout
    last_error: Exception | None = None
    while True:
        for proc in procs:
            proc.check_running()
        try:
            if check():
                return time.monotonic() - start
        except Exception as exc:  # the thing polled is not up yet: keep the reason for the message
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            logs = "".join(f"\n--- {p.name} log tail ---\n{p.log_tail()}" for p in procs)
            raise ProcessFailed(f"timed out after {timeout:.0f}s waiting for {what}{detail}{logs}")
        time.sleep(interval)


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: never leave a child running when the interpreter exits (e.g. on Ctrl-C mid-session)."""
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)
