"""Leader election and shard ownership on coordination.k8s.io Leases (the Kubernetes-native lock).

Every replica runs kopf (watches and indexes stay warm), but a pool is evaluated only by the replica that holds
the Lease of the pool's shard. ``shards=1`` is plain leader election: one Lease, one active replica, hot
standbys. With ``shards=N`` each pool belongs to shard ``crc32(namespace/name) % N`` (stable: the same on every
replica and after restarts) and each shard has its own Lease ``<name>-<i>``; a replica takes at most its fair
share of the free shards (``ceil(N / live replicas)``, live replicas counted from the shard Leases' holders), so
shards spread over the replicas and move to the survivors when one dies — the way Argo CD shards its
application controller.

Safety comes from timing, as in client-go's leaderelection: a holder renews every ``retry_period``; it stops
acting on a shard once ``renew_deadline`` has passed since its last successful renewal; another replica may take
the shard only after ``lease_duration`` without a renewal. ``lease_duration - renew_deadline`` covers an
evaluation that was already running when the holder lost the shard, so two replicas never write for the same
pool at the same time. Every write of a Lease carries its resourceVersion: of two replicas racing for a free
Lease, one gets 409 Conflict and backs off. A graceful stop releases the Leases, so a rolling update or a drain
fails over within one ``retry_period``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

log = logging.getLogger("chanscale")

GROUP_LABEL = "chanscale.dev/lease-group"


def shard_of(key: tuple[str, str], shards: int) -> int:
    return zlib.crc32(f"{key[0]}/{key[1]}".encode()) % shards if shards > 1 else 0


def default_identity() -> str:
    """The pod name (HOSTNAME) plus a random suffix: a restarted pod never mistakes its predecessor's Lease for
    its own."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{uuid.uuid4().hex[:6]}"


@dataclass
class LeaseRecord:
    holder: str | None
    renewed: float  # wall-clock seconds of the last renewal (0 when never)
    duration: float
    resource_version: str | None
    transitions: int = 0
    group: str | None = None  # member Leases carry their group as a label (listed by :meth:`LeaseStore.members`)

    def expired(self, now: float) -> bool:
        """Free, or not renewed for its duration (a released Lease has no holder)."""
        return not self.holder or now - self.renewed >= self.duration


class LeaseStore(Protocol):
    """The Lease I/O (the API server in production, a dict in unit tests). ``write`` raises :class:`LeaseConflict`
    when ``resource_version`` is stale, and creates the Lease when it is None."""

    async def read(self, name: str) -> LeaseRecord | None: ...

    async def write(self, name: str, record: LeaseRecord) -> str: ...

    async def members(self, group: str) -> list[LeaseRecord]: ...


class LeaseConflict(Exception):
    """Someone else wrote the Lease first."""


@dataclass
class Elector:
    """Holds the Leases of the shards this replica owns; :meth:`owns` answers for a pool."""

    store: LeaseStore
    name: str = "chanscale"
    identity: str = field(default_factory=default_identity)
    shards: int = 1
    lease_duration: float = 10.0
    renew_deadline: float = 7.0
    retry_period: float = 2.0
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    held: dict[int, float] = field(default_factory=dict)  # shard -> monotonic time of the last renewal
    versions: dict[int, str] = field(default_factory=dict)
    on_change: Callable[[set[int]], None] | None = None
    transitions: int = 0  # how many shards this replica has acquired

    def lease_name(self, shard: int) -> str:
        return self.name if self.shards == 1 else f"{self.name}-{shard}"

    def active_shards(self) -> set[int]:
        """The shards this replica may act on now (renewed within ``renew_deadline``)."""
        now = self.mono()
        return {s for s, at in self.held.items() if now - at < self.renew_deadline}

    def owns(self, key: tuple[str, str]) -> bool:
        return shard_of(key, self.shards) in self.active_shards()

    @property
    def is_leader(self) -> bool:
        return bool(self.active_shards())

    def _record(self, transitions: int) -> LeaseRecord:
        return LeaseRecord(self.identity, self.wall(), self.lease_duration, None, transitions)

    async def _try(self, shard: int, rec: LeaseRecord | None, want: bool) -> None:
        """Renew a held shard, or take a free/expired one if ``want``."""
        name = self.lease_name(shard)
        mine = rec is not None and rec.holder == self.identity
        if not mine and not want:
            return
        if not mine and rec is not None and not rec.expired(self.wall()):
            return
        new = self._record((rec.transitions if rec else 0) + (0 if mine else 1))
        new.resource_version = rec.resource_version if rec else None
        try:
            self.versions[shard] = await self.store.write(name, new)
        except LeaseConflict:
            self.held.pop(shard, None)
            return
        if not mine:
            self.transitions += 1
            log.info("acquired Lease %s as %s", name, self.identity)
        self.held[shard] = self.mono()

    async def _members(self) -> set[str]:
        """The live replicas: each renews its own member Lease every round (sharded mode only)."""
        if self.shards == 1:
            return {self.identity}
        name = f"{self.name}-member-{self.identity}"
        rec = await self.store.read(name)
        new = self._record(0)
        new.resource_version = rec.resource_version if rec else None
        new.group = self.name
        await self.store.write(name, new)
        now = self.wall()
        return {r.holder for r in await self.store.members(self.name) if r.holder and not r.expired(now)} | {
            self.identity
        }

    async def round(self) -> None:
        """One election round: renew our shards up to a fair share, give back the excess, take free ones."""
        before = self.active_shards()
        try:
            # Concurrently: on a slow API server, sequential reads would push the renewals past the deadline.
            members = asyncio.ensure_future(self._members())
            try:
                got = await asyncio.gather(*(self.store.read(self.lease_name(s)) for s in range(self.shards)))
            finally:
                live = await members
        except Exception as e:  # the API server is unreachable: act on what we hold until the renew deadline
            log.warning("reading the Leases of %s failed: %s", self.name, e)
            return
        records: dict[int, LeaseRecord | None] = dict(enumerate(got))
        share = math.ceil(self.shards / len(live))
        for shard, rec in records.items():
            if rec is None or rec.holder != self.identity:
                self.held.pop(shard, None)  # someone else's: not ours to act on
        mine = sorted(s for s, r in records.items() if r is not None and r.holder == self.identity)
        await asyncio.gather(*(self._try(shard, records[shard], want=True) for shard in mine[:share]))
        for shard in mine[share:]:
            await self._release(shard, records[shard])
        for shard, rec in records.items():
            if shard not in mine and len(self.held) < share:
                await self._try(shard, rec, want=True)
        after = self.active_shards()
        if after != before and self.on_change is not None:
            self.on_change(after)

    async def run(self) -> None:
        """Forever: an election round every ``retry_period``; on cancellation, release what we hold."""
        try:
            while True:
                try:
                    await self.round()
                except Exception as e:
                    log.warning("leader election round failed: %s", e)
                await asyncio.sleep(self.retry_period)
        finally:
            await self.release()

    async def _release(self, shard: int, rec: LeaseRecord | None) -> None:
        self.held.pop(shard, None)
        free = LeaseRecord(None, 0.0, self.lease_duration, rec.resource_version if rec else self.versions.get(shard))
        free.transitions = rec.transitions if rec else 0
        try:
            await self.store.write(self.lease_name(shard), free)
            log.info("released Lease %s", self.lease_name(shard))
        except Exception as e:
            log.warning("releasing Lease %s failed: %s", self.lease_name(shard), e)

    async def release(self) -> None:
        """Give the Leases back (a graceful stop): another replica takes over at its next round."""
        for shard in list(self.held):
            await self._release(shard, None)


def _micro(ts: float) -> str | None:
    if ts <= 0:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_micro(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.strptime(str(value).replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def _from_raw(raw: Mapping[str, Any]) -> LeaseRecord:
    spec = raw.get("spec") or {}
    return LeaseRecord(
        holder=spec.get("holderIdentity"),
        renewed=_parse_micro(spec.get("renewTime")),
        duration=float(spec.get("leaseDurationSeconds") or 0),
        resource_version=(raw.get("metadata") or {}).get("resourceVersion"),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


@dataclass
class KubeLeaseStore:
    """Leases in ``namespace`` through the shared ApiClient (blocking client, run in a worker thread)."""

    namespace: str
    timeout: float = 5.0

    def _api(self) -> Any:
        from kubernetes import client

        from .kube import api_client

        return client.CoordinationV1Api(api_client())

    def _read(self, name: str) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException

        try:
            raw: Mapping[str, Any] = json.loads(
                self._api()
                .read_namespaced_lease(name, self.namespace, _request_timeout=self.timeout, _preload_content=False)
                .data
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return _from_raw(raw)

    def _members(self, group: str) -> list[LeaseRecord]:
        raw = json.loads(
            self._api()
            .list_namespaced_lease(
                self.namespace,
                label_selector=f"{GROUP_LABEL}={group}",
                _request_timeout=self.timeout,
                _preload_content=False,
            )
            .data
        )
        return [_from_raw(item) for item in raw.get("items") or ()]

    async def members(self, group: str) -> list[LeaseRecord]:
        return await asyncio.to_thread(self._members, group)

    def _write(self, name: str, rec: LeaseRecord) -> str:
        from kubernetes.client.exceptions import ApiException

        from . import FIELD_MANAGER

        now = _micro(rec.renewed)
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {GROUP_LABEL: rec.group} if rec.group else {},
            },
            "spec": {
                "holderIdentity": rec.holder,
                "leaseDurationSeconds": max(1, math.ceil(rec.duration)),
                "renewTime": now,
                "leaseTransitions": rec.transitions,
            },
        }
        api = self._api()
        try:
            if rec.resource_version is None:
                res = api.create_namespaced_lease(
                    self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=self.timeout
                )
            else:
                body["metadata"]["resourceVersion"] = rec.resource_version
                res = api.replace_namespaced_lease(
                    name, self.namespace, body, field_manager=FIELD_MANAGER, _request_timeout=self.timeout
                )
        except ApiException as e:
            if e.status == 409:
                raise LeaseConflict(name) from e
            raise
        return str(res.metadata.resource_version)

    async def read(self, name: str) -> LeaseRecord | None:
        return await asyncio.to_thread(self._read, name)

    async def write(self, name: str, record: LeaseRecord) -> str:
        return await asyncio.to_thread(self._write, name, record)
