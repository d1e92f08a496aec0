"""Whether the policy gate's input carries the namespace's per-pool list (``input.namespace.pools``).

Every policy call carries a summary of the namespace's other pools (``input.namespace.others``: how many, their
replicas, their claims), which is all the shipped budget guard reads. The per-pool list costs what the namespace
holds — 55 KB of JSON per call at 1 000 pools in one namespace, which the operator encodes and OPA decodes (a call
took 8.7 ms against 1.1 ms without it, bench/RESULTS.md section 6) — so it is sent only when a policy reads it.

``--policy-peers`` chooses: ``auto`` (the default) sends the list when a loaded policy module refers to
``input.namespace`` other than through ``.name`` or ``.others``, checked in the policies' source (the local gate's
files, or a remote OPA's ``GET /v1/policies``) in the background from the first policy call on, again every
``every`` seconds, and sends the list until the first check has answered; ``list`` always sends it; ``summary``
never does. When the sources cannot be read the list is sent: a policy that reads it must never see it missing.
A module that passes ``input`` whole to a function (``f(input)``) and reads the list there is not detected: run
such policies with ``--policy-peers list`` (docs/policies.md).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger("chanscale.policy")

MODES = ("auto", "list", "summary")

# The two fields every call carries, read through input.namespace (or input["namespace"]): removed before the check.
_NAMESPACE = r'\binput\s*(?:\.\s*namespace\b|\[\s*"namespace"\s*\])'
_SAFE = re.compile(_NAMESPACE + r'\s*(?:\.\s*(?:name|others)\b|\[\s*"(?:name|others)"\s*\])')
# What is left that may reach the list: input.namespace whole, .pools, an index by a variable, or the key
# "namespace" in any other form (object.get(input, ["namespace", "pools"]), a walk). Comments are not stripped: a
# mention there only costs the list's encoding.
_MAY_READ = re.compile(_NAMESPACE + r'|"namespace"')


def reads_peer_list(sources: Iterable[str]) -> bool:
    """Whether any of these Rego modules may read ``input.namespace.pools`` (conservatively: see the module)."""
    return any(_MAY_READ.search(_SAFE.sub("", src)) for src in sources)


class PeerListProbe:
    """``auto``: whether the loaded policies read the list, re-checked at most every ``every`` seconds.

    ``sources`` returns the source of every loaded module. A call never waits for a check: it answers from the last
    one and, when that is older than ``every``, starts the next in the background (one at a time). Until the first
    check has answered, the list is sent — the safe side — so a policy call (made under its namespace's lock) never
    waits for the policies to be read."""

    def __init__(
        self,
        sources: Callable[[], Awaitable[list[str]]],
        *,
        every: float = 60.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources, self.every, self.timeout, self._clock = sources, every, timeout, clock
        self._wanted = True
        self._checked: float | None = None
        self._failing = False  # warn once per run of failed reads, not every minute
        self._task: asyncio.Task[None] | None = None

    async def __call__(self) -> bool:
        stale = self._checked is None or self._clock() - self._checked >= self.every
        if stale and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._refresh(), name="chanscale-policy-peers")
        return self._wanted

    async def settle(self) -> None:
        """Wait for the check under way, if any (start-up and tests)."""
        if self._task is not None:
            await self._task

    async def _refresh(self) -> None:
        wanted = await self._check()
        self._wanted, self._checked = wanted, self._clock()

    async def _check(self) -> bool:
        try:
            wanted = reads_peer_list(await asyncio.wait_for(self._sources(), self.timeout))
        except Exception as e:  # any failure: send the list (a policy that reads it must never miss it)
            (log.debug if self._failing else log.warning)(
                "cannot read the loaded policies (%s); policy calls carry input.namespace.pools until they can be read "
                "(or set --policy-peers list or summary)",
                e,
            )
            self._failing = True
            return True
        self._failing = False
        if wanted != self._wanted or self._checked is None:  # the first answer, and every change
            log.info(
                "policy input: %s",
                "a loaded policy reads input.namespace: every call carries the namespace's pool list"
                if wanted
                else "no loaded policy reads input.namespace.pools: calls carry input.namespace.others only",
            )
        return wanted


def make_probe(mode: str, gate: Any) -> Callable[[], Awaitable[bool]]:
    """The ``--policy-peers`` choice as a coroutine function: whether this policy call should carry the list."""
    if mode not in MODES:
        raise ValueError(f"--policy-peers must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        sources = getattr(gate, "policy_sources", None)
        if sources is not None:
            return PeerListProbe(sources)
    wanted = mode != "summary"  # auto without a way to read the sources: send the list

    async def fixed() -> bool:
        return wanted

    return fixed
