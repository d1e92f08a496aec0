"""Liveness and readiness, served by the operator itself (kopf's own endpoint cannot fail on our criteria).

- ``/healthz`` (liveness) fails when any known WorkerPool this replica owns (all of them without leader election;
  chanscale.leader) has not been evaluated for ``stale_intervals`` ticks
  (a pool's evaluation has stopped: restart the operator, the one remedy left), or when a supervised child (the
  local OPA) is down.
- ``/readyz`` (readiness) fails until start-up is done and whenever the API server has not answered for the last
  few ticks: kopf's watches cannot be live then; kopf re-establishes them once it answers.

A watchdog task does the checks every tick and restarts a dead local OPA at once, rather than when a decision
next needs it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("chanscale.health")


@dataclass
class Health:
    tick: float
    stale_intervals: float = 3.0
    api_check: Callable[[], Any] | None = None  # blocking; raises when the API server does not answer
    gate: Any = None
    clock: Callable[[], float] = time.time
    known: dict[tuple[str, str], float] = field(default_factory=dict)  # pool -> first seen
    evaluated: dict[tuple[str, str], float] = field(default_factory=dict)  # shared with Runtime.evaluated
    started: bool = False
    api_ok_at: float | None = None
    # With leader election or shards (chanscale.leader): only the pools this replica owns must be evaluated, and
    # a pool it has just taken over counts from the takeover.
    owns: Callable[[tuple[str, str]], bool] | None = None
    owned_since: float = 0.0

    def seen(self, key: tuple[str, str]) -> None:
        self.known.setdefault(key, self.clock())

    def gone(self, key: tuple[str, str]) -> None:
        self.known.pop(key, None)

    def stale_pools(self) -> list[str]:
        now, limit = self.clock(), self.stale_intervals * self.tick
        out = []
        for key, first in list(self.known.items()):
            if self.owns is not None and not self.owns(key):
                continue
            last = max(self.evaluated.get(key, 0.0), first, self.owned_since)
            if now - last > limit:
                out.append(f"{key[0]}/{key[1]} not evaluated for {now - last:.0f}s")
        return out

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        problems = self.stale_pools()
        alive = getattr(self.gate, "alive", None)
        if alive is False:
            problems.append("local OPA is down (restarting)")
        return not problems, {"pools": len(self.known), "problems": problems[:20]}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        window = max(3 * self.tick, 15.0)
        api_ok = self.api_ok_at is not None and self.clock() - self.api_ok_at <= window
        problems = [] if self.started else ["starting"]
        if not api_ok:
            problems.append(f"API server has not answered for {window:.0f}s: watches are not live")
        return not problems, {"problems": problems}

    async def check_once(self) -> None:
        if self.api_check is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(self.api_check), timeout=max(self.tick, 5.0))
                self.api_ok_at = self.clock()
            except Exception as e:  # any failure means "not answering"
                log.debug("API server check failed: %s", e)
        supervise = getattr(self.gate, "supervise", None)
        if supervise is not None:
            await supervise()

    async def watchdog(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # the watchdog must outlive anything it watches
                log.exception("health watchdog")
            await asyncio.sleep(min(self.tick, 5.0))

    async def serve(self, url: str) -> Any:
        """Serve /healthz (or the URL's path) and /readyz on the URL's host and port; returns the runner."""
        from aiohttp import web

        def handler(check: Callable[[], tuple[bool, dict[str, Any]]]) -> Any:
            async def respond(_request: web.Request) -> web.Response:
                ok, detail = check()
                return web.json_response({"ok": ok, **detail}, status=200 if ok else 503)

            return respond

        parts = urllib.parse.urlsplit(url)
        app = web.Application()
        app.add_routes(
            [
                web.get(parts.path or "/healthz", handler(self.liveness)),
                web.get("/readyz", handler(self.readiness)),
            ]
        )
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 80).start()
        return runner


def api_server_answers() -> None:
    """GET /version: every authenticated user may read it; an HTTP error still means the server answered."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.VersionApi().get_code(_request_timeout=5)
    except ApiException as e:
        if not e.status:
            raise
