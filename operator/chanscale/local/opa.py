"""Run and supervise a real ``opa run --server`` child on 127.0.0.1.

Used at run time by :class:`chanscale.policy.LocalOpaGate` (``chanscale run --opa local``, the default without an
OPA URL) and by the integration tests and the latency benchmark. Evaluating policies in a real OPA (rather than a
re-implementation) means the Rego in ``policies/`` behaves exactly as it will in an OPA sidecar or service.

Why a child process and not an in-process engine: no well-kept Rego engine for Python is on the package index
this project can use (``regorus`` is not published there; forks are unmaintained snapshots), and a local OPA
answers a decision in about a millisecond (``python -m bench.policy_latency``), far below a scaling tick.

The child is bound to 127.0.0.1 on a free port, asked to die with its parent (``PR_SET_PDEATHSIG`` on Linux) so an
operator killed with SIGKILL leaks nothing, and writes its log to a file whose tail goes into every error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

log = logging.getLogger("chanscale.opa")

LOOPBACK = "127.0.0.1"

#: operator/chanscale/local/opa.py -> the repository root (where ``make tools`` puts ``bin/opa``).
_REPO_ROOT = Path(__file__).resolve().parents[3]

#: Files in a policy directory that are not policy: JSON Schemas (OPA would load them as data and their keys
#: would collide) and Rego unit tests (not needed to serve decisions).
DEFAULT_IGNORE: tuple[str, ...] = ("*.schema.json", "*_test.rego")

HOW_TO_GET = (
    "run `make tools` (hack/tools.sh puts opa into ./bin), set $CHANSCALE_OPA_BIN to an opa binary, "
    "or put `opa` on PATH"
)


class OpaNotFound(FileNotFoundError):
    """No ``opa`` binary; the message lists where we looked and how to get one."""


class OpaStartError(RuntimeError):
    """``opa run --server`` exited or did not become healthy; the message carries the tail of its log."""


def find_opa_binary() -> Path:
    """The opa binary: ``$CHANSCALE_OPA_BIN``, else ``./bin/opa``, else the repo's ``bin/opa``, else PATH."""
    candidates: list[Path] = []
    env = os.environ.get("CHANSCALE_OPA_BIN")
    if env:
        candidates.append(Path(env))
    candidates += [Path.cwd() / "bin" / "opa", _REPO_ROOT / "bin" / "opa"]
    on_path = shutil.which("opa")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise OpaNotFound(f"opa binary not found (looked in: {looked}, PATH); to get it: {HOW_TO_GET}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it). Not process.free_port: the operator
    image leaves the test harness (process.py) out, see hack/image_rootfs.py."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the operator dies, even by SIGKILL (no orphaned OPA)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1


class OpaServer:
    """One supervised ``opa run --server`` serving the given policy/data paths on 127.0.0.1.

    ``await start()`` returns once OPA answers ``/health?bundles`` (policies loaded); ``url`` is then its base
    URL. ``running`` turns False if the child dies; call ``start()`` again to restart it (on a new port).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        binary: str | os.PathLike[str] | None = None,
        ignore: Sequence[str] = DEFAULT_IGNORE,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self._binary = Path(binary) if binary is not None else None
        self.ignore = tuple(ignore)
        self.extra_args = tuple(extra_args)
        self._own_log = log_path is None
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="chanscale-opa-", suffix=".log")[1])
        self.port: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def binary(self) -> Path:
        """Resolved lazily so a missing binary fails at start (with the fix), not at construction."""
        if self._binary is None:
            self._binary = find_opa_binary()
        elif not (self._binary.is_file() and os.access(self._binary, os.X_OK)):
            raise OpaNotFound(
                f"opa binary {self._binary} does not exist or is not executable; to get one: {HOW_TO_GET}"
            )
        return self._binary

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("OPA server not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def argv(self, port: int) -> list[str]:
        args = [str(self.binary), "run", "--server", "--addr", f"{LOOPBACK}:{port}", "--log-level", "error"]
        args += ["--skip-version-check"]  # no outbound call to check for releases
        for pattern in self.ignore:
            args += ["--ignore", pattern]
        args += list(self.extra_args)
        args += [str(p) for p in self.paths]
        return args

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, timeout: float = 20.0) -> str:
        """Start (or restart) the child and wait until it serves its policies; returns the URL.

        A port taken between picking and binding makes OPA exit at once; that is retried on a new port.
        """
        missing = [str(p) for p in self.paths if not p.exists()]
        if missing:
            raise OpaStartError(f"policy path(s) do not exist: {', '.join(missing)}")
        await self.stop()
        last: Exception | None = None
        for _ in range(3):
            try:
                return await self._start_once(timeout)
            except OpaStartError as exc:
                last = exc
                if "address already in use" not in str(exc):
                    raise
        assert last is not None
        raise last

    async def _start_once(self, timeout: float) -> str:
        port = free_port()
        argv = self.argv(port)
        with open(self.log_path, "ab") as logf:
            logf.write(f"$ {' '.join(argv)}\n".encode())
            logf.flush()
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=asyncio.subprocess.STDOUT,
                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
                )
            except OSError as exc:
                raise OpaStartError(f"cannot run {argv[0]}: {exc}") from exc
        self.port = port
        self.starts += 1
        log.debug("started opa pid=%s on %s", self._proc.pid, self.url)
        try:
            await self._wait_healthy(timeout)
        except OpaStartError:
            await self.stop()
            raise
        return self.url

    async def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health = f"{self.url}/health?bundles"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as session:
            while True:
                assert self._proc is not None
                if self._proc.returncode is not None:
                    raise OpaStartError(
                        f"opa exited with code {self._proc.returncode} while starting; its log "
                        f"({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    async with session.get(health) as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() >= deadline:
                    raise OpaStartError(
                        f"opa did not become healthy on {self.url} within {timeout:.0f}s; its log "
                        f"({self.log_path}) ends with:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)

    async def stop(self, grace: float = 5.0) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after ``grace`` seconds) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        else:
            await proc.wait()

    async def close(self) -> None:
        """Stop the child and remove the log file this server created."""
        await self.stop()
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    async def __aenter__(self) -> OpaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
