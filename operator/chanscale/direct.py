"""The opt-in direct path: a pool's backlog gauge read from a bounded sample of its worker pods' own /metrics.

Knative's KPA reads concurrency from its pods every second instead of waiting for a Prometheus scrape; this is the
same idea for ``chanscale_channel_backlog`` (docs/direct-metrics.md):

- **Which pods.** Only pods carrying the label ``chanscale.dev/direct-metrics=true`` are watched (a server-side
  label selector: other pods never reach the operator) and indexed by kopf (:func:`pod_entry`), keyed by the
  Deployment that owns them (owner ReplicaSet ``<deployment>-<pod-template-hash>``). A pod is indexed while it is
  Ready, has a pod IP, is not terminating and not on the host network (its IP would be the node's). No API read
  per tick: the addresses come from the index.
- **Which address.** Only the pod's own IP (``status.podIP``, set by the kubelet, not by the tenant), only the
  port the pod declares — a container port named ``chanscale-metrics`` or the annotation
  ``chanscale.dev/metrics-port`` — and only the path ``/metrics``. No redirect is followed, nothing is sent but a
  plain GET (never the operator's credentials), the answer is cut at :data:`MAX_BYTES` and the request at
  ``timeout`` seconds.
- **How many.** A random sample of :func:`sample_size` pods (the KPA's: 95 % confidence, margin of error 5 for an
  assumed σ² of 100: all pods up to 3, at most 16); the sum of the sample is scaled to the Ready pod count.
- **Bad data is never used.** One sampled pod unreachable, answering badly, without the channel's series, or
  with NaN: the whole reading is refused with a typed reason, and the decision reads Prometheus as before
  (:func:`merge`).

Pure parts (sampling, parsing, estimating, merging) are separate from the I/O (:class:`DirectPath`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import telemetry

LABEL = "chanscale.dev/direct-metrics"
LABEL_SELECTOR = f"{LABEL}=true"
PORT_NAME = "chanscale-metrics"
PORT_ANNOTATION = "chanscale.dev/metrics-port"
PATH = "/metrics"
METRIC = "chanscale_channel_backlog"
#: An answer longer than this is refused (a worker's /metrics is a few kB; this bounds what a pod can make us read).
MAX_BYTES = 1 << 20
#: At most this many pod requests in flight at once, across all pools.
CONCURRENCY = 32

# The KPA's sample size (knative/serving pkg/autoscaler): z² σ² / e² with z = 1.96, σ² = 100, e = 5.
_X = 1.96 * 1.96 * 100.0 / 25.0

# Typed reasons of the DirectMetrics condition (docs/direct-metrics.md).
READ = "DirectRead"
DISABLED = "DirectDisabled"
NOT_APPLICABLE = "DirectNotApplicable"
NO_PODS = "DirectNoPods"
UNREACHABLE = "DirectUnreachable"
BAD_DATA = "DirectBadData"
STALE = "DirectStale"


class DirectError(Exception):
    """A sampled pod could not give a usable reading; ``reason`` is one of the typed reasons."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------------ the pod index
def _port(spec: Mapping[str, Any], annotations: Mapping[str, Any]) -> int | None:
    """The declared metrics port: a container port named ``chanscale-metrics``, else the annotation."""
    for c in spec.get("containers") or ():
        for p in c.get("ports") or ():
            if p.get("name") == PORT_NAME and isinstance(p.get("containerPort"), int):
                return int(p["containerPort"])
    raw = annotations.get(PORT_ANNOTATION)
    if isinstance(raw, str) and raw.isdigit() and 0 < int(raw) < 65536:
        return int(raw)
    return None


def _deployment(meta: Mapping[str, Any]) -> str | None:
    """The Deployment owning a pod: its controller ReplicaSet is named ``<deployment>-<pod-template-hash>``."""
    hash_ = (meta.get("labels") or {}).get("pod-template-hash")
    for ref in meta.get("ownerReferences") or ():
        if ref.get("kind") == "ReplicaSet" and ref.get("controller") and hash_:
            name = str(ref.get("name") or "")
            if name.endswith(f"-{hash_}"):
                return name[: -len(hash_) - 1]
    return None


def _ready(status: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def pod_entry(body: Mapping[str, Any]) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """((namespace, deployment), {pod, ip, port}) for a pod the direct path may read, else None (not indexed)."""
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    if (meta.get("labels") or {}).get(LABEL) != "true" or meta.get("deletionTimestamp") or spec.get("hostNetwork"):
        return None
    deployment, port = _deployment(meta), _port(spec, meta.get("annotations") or {})
    try:
        ip = str(ipaddress.ip_address(str(status.get("podIP") or "")))
    except ValueError:
        return None
    if deployment is None or port is None or not _ready(status):
        return None
    return (str(meta.get("namespace") or ""), deployment), {"pod": str(meta.get("name") or ""), "ip": ip, "port": port}


# ------------------------------------------------------------------------------------------------ pure parts
def sample_size(population: int) -> int:
    """The KPA's sample size for a population of pods: all of them up to 3, then N·X / (N + X − 1), X ≈ 15.4."""
    if population <= 3:
        return max(population, 0)
    return math.ceil(population * _X / (population + _X - 1))


def parse_backlog(text: str, channel: str) -> float:
    """The channel's ``chanscale_channel_backlog`` in one pod's Prometheus text exposition (summed over series of
    the channel; a worker's own ``namespace`` label is ignored: the pod's namespace is the truth). Raises
    :class:`DirectError` (BAD_DATA) for unparsable text, a missing series, NaN, ±Inf or a negative value."""
    total, found = 0.0, False
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == METRIC and s.labels.get("channel") == channel:
                    if not math.isfinite(s.value) or s.value < 0:
                        raise DirectError(BAD_DATA, f"{METRIC} for channel {channel!r} is {s.value}")
                    total, found = total + s.value, True
    except DirectError:
        raise
    except Exception as e:  # the parser raises ValueError and friends on malformed text
        raise DirectError(BAD_DATA, f"unparsable /metrics: {type(e).__name__}") from e
    if not found:
        raise DirectError(BAD_DATA, f"no {METRIC} series for channel {channel!r}")
    return total


def estimate(values: Sequence[float], population: int) -> float:
    """The backlog of all ``population`` pods from a sample of their values: the sample sum scaled by N / n."""
    return sum(values) * population / len(values)


@dataclass(frozen=True)
class Reading:
    """One direct reading of a pool: a backlog estimate, or the reason there is none."""

    at: float  # wall time of the reading
    backlog: float | None = None
    sampled: int = 0
    population: int = 0
    reason: str = READ
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.backlog is not None


@dataclass(frozen=True)
class Note:
    """What the decision used, for the pool's ``DirectMetrics`` condition."""

    used: bool
    reason: str
    message: str


def merge(
    reading: Reading | None,
    backlog: float | None,
    age: float | None,
    now: float,
    max_age: float,
    stale_after: float,
) -> tuple[float | None, float | None, Note]:
    """(backlog, backlog sample age, note) for the decision: the direct reading when it is valid and fresh (no older
    than ``max_age``) beside a Prometheus sample that is not stale, else Prometheus' own values."""
    if reading is None:
        return backlog, age, Note(False, STALE, "no direct reading yet; backlog from Prometheus")
    if not reading.ok:
        return backlog, age, Note(False, reading.reason, f"{reading.message}; backlog from Prometheus")
    old = now - reading.at
    if old > max_age:
        return backlog, age, Note(False, STALE, f"last direct reading is {old:.0f}s old; backlog from Prometheus")
    if age is None or age > stale_after:
        # Staleness is judged on Prometheus, which the other signals come from: the direct path does not hide it.
        return backlog, age, Note(False, STALE, "Prometheus' sample is missing or stale; not mixing sources")
    msg = (
        f"backlog {reading.backlog:.4g} from {reading.sampled} of {reading.population} Ready pods' /metrics "
        f"(Prometheus: {'-' if backlog is None else f'{backlog:.4g}'})"
    )
    return reading.backlog, max(old, 0.0), Note(True, READ, msg)


def opted_in(spec: Mapping[str, Any]) -> bool:
    return bool(((spec.get("metrics") or {}).get("direct") or {}).get("enabled"))


def target_deployment(spec: Mapping[str, Any], pool: str) -> str | None:
    """The Deployment whose pods the direct path reads: the pool's own (spec.template) or scaleTargetRef's; None
    for another kind (its pods are not indexed by owner)."""
    if spec.get("template"):
        return pool
    ref = spec.get("scaleTargetRef") or {}
    return str(ref.get("name") or pool) if ref.get("kind") in (None, "Deployment") else None


# ------------------------------------------------------------------------------------------------ the I/O edge
PodList = Callable[[str, str], Iterable[Mapping[str, Any]]]  # (namespace, deployment) -> index entries
Fetch = Callable[[str, int], Any]  # (ip, port) -> awaitable text


@dataclass
class DirectPath:
    """Reads opted-in pools' backlog from their pods (see the module docstring); keeps each pool's last reading."""

    pods: PodList
    timeout: float = 0.5
    period: float = 2.0
    fetch: Fetch | None = None  # tests replace the HTTP transport
    wall: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    readings: dict[tuple[str, str], Reading] = field(default_factory=dict)
    requests: int = 0
    _session: Any = None
    _slots: asyncio.Semaphore | None = None

    @property
    def max_age(self) -> float:
        """A reading older than this (three periods: a missed round is tolerated) is not used."""
        return 3 * self.period

    def fresh(self, key: tuple[str, str]) -> Reading | None:
        """The pool's last reading if valid and younger than :attr:`max_age`."""
        r = self.readings.get(key)
        return r if r is not None and r.ok and self.wall() - r.at <= self.max_age else None

    def due(self, key: tuple[str, str]) -> bool:
        last = self.readings.get(key)
        return last is None or self.wall() - last.at >= self.period * 0.9

    async def read(self, key: tuple[str, str], deployment: str, channel: str) -> Reading:
        """Sample the pool's Ready pods once; record and return the reading (never raises)."""
        pods = list(self.pods(key[0], deployment))
        now = self.wall()
        if not pods:
            r = Reading(now, reason=NO_PODS, message=f"no Ready pod of Deployment {deployment} declares /metrics")
        else:
            chosen = self.rng.sample(pods, sample_size(len(pods)))
            results = await asyncio.gather(*(self._one(p, channel) for p in chosen), return_exceptions=True)
            r = _reading(now, chosen, results, len(pods))
        self.readings[key] = r
        telemetry.DIRECT_READINGS.labels(r.reason).inc()
        return r

    async def _one(self, pod: Mapping[str, Any], channel: str) -> float:
        if self._slots is None:
            self._slots = asyncio.Semaphore(CONCURRENCY)
        async with self._slots:
            self.requests += 1
            telemetry.DIRECT_REQUESTS.inc()
            text = await (self.fetch or self._http)(str(pod["ip"]), int(pod["port"]))
        return parse_backlog(text, channel)

    async def _http(self, ip: str, port: int) -> str:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"Accept": "text/plain"}
            )
        host = f"[{ip}]" if ":" in ip else ip
        try:
            async with self._session.get(f"http://{host}:{port}{PATH}", allow_redirects=False) as resp:
                if resp.status != 200:
                    raise DirectError(BAD_DATA, f"HTTP {resp.status}")
                body = b""
                while len(body) <= MAX_BYTES:  # read() returns what is buffered: loop to the bound or the end
                    chunk = await resp.content.read(MAX_BYTES + 1 - len(body))
                    if not chunk:
                        break
                    body += chunk
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise DirectError(UNREACHABLE, f"{type(e).__name__}") from e
        if len(body) > MAX_BYTES:
            raise DirectError(BAD_DATA, f"answer larger than {MAX_BYTES} bytes")
        return body.decode("utf-8", errors="replace")

    def forget(self, keep: Iterable[tuple[str, str]]) -> None:
        alive = set(keep)
        for key in [k for k in self.readings if k not in alive]:
            del self.readings[key]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _reading(now: float, chosen: Sequence[Mapping[str, Any]], results: Sequence[Any], population: int) -> Reading:
    """All sampled pods answered with a value: the estimate; else the first failure's typed reason."""
    values: list[float] = []
    for pod, res in zip(chosen, results, strict=True):
        if isinstance(res, DirectError):
            msg = f"pod {pod['pod']} ({len(chosen)} of {population} sampled): {res}"
            return Reading(now, sampled=len(chosen), population=population, reason=res.reason, message=msg)
        if isinstance(res, BaseException):
            msg = f"pod {pod['pod']}: {type(res).__name__}"
            return Reading(now, sampled=len(chosen), population=population, reason=UNREACHABLE, message=msg)
        values.append(float(res))
    return Reading(now, backlog=estimate(values, population), sampled=len(chosen), population=population)
