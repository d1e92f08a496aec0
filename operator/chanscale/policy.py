"""The policy gate: every proposed change of replicas is put to OPA before the operator scales.

Policies (Rego, ``policies/``) answer with a decision document ``{allow, replicas, reasons, escalated, ...}``
(``policies/decision.schema.json``) for an input document built by :func:`build_input`
(``policies/input.schema.json``). Three gates share one protocol:

* :class:`OpaGate` — production: opa-python-client's ``AsyncOpaClient`` against an OPA server URL (a sidecar or a
  service), with a per-decision timeout and the client's retries. Transport failures raise
  :class:`PolicyUnavailable` so the pool's ``spec.policy.failurePolicy`` decides (:func:`verdict_on_failure`);
  an *undefined* decision (OPA answers without ``result``) is a deny, never an allow.
* :class:`LocalOpaGate` — the default without a URL: starts and supervises ``opa run --server`` on 127.0.0.1
  with the packaged policies (the same Rego), restarting it if it dies.
* :class:`AllowAllGate` — ``--opa none``: the gate is off and says so in every verdict.

Design notes: OPA errors and unreachability are *not* denials (a deny would hide an outage as a policy
decision); the failure policy makes the choice explicit per pool. Policies read ``input.now`` instead of the wall
clock so a recorded input replays to the same decision.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from opa_client.opa_async import AsyncOpaClient

from .local.opa import OpaNotFound, OpaServer, OpaStartError

log = logging.getLogger("chanscale.policy")

INPUT_API_VERSION = "policy.chanscale.dev/v1"
POLICY_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
SIGNAL_KEYS = (
    "backlog",
    "arrivalRate",
    "serviceRate",
    "processedRate",
    "errorRate",
    "p99LatencySeconds",
    "ageSeconds",
)
#: Annotations that are large and never useful to a policy (kubectl's copy of the whole object).
_DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one proposed change.

    ``replicas`` is the count the policy allows (a clamp, normally between current and proposed); None means
    "as proposed". ``limited_by`` and ``labels`` are extras from the decision document (guards that bound the
    change; informational labels such as ``chanscale.dev/escalated``).
    """

    allow: bool
    replicas: int | None
    reasons: tuple[str, ...]
    escalated: bool = False
    source: str = "opa"  # "opa" | "failure-policy" | "disabled"
    error: str | None = None
    latency_seconds: float = 0.0
    limited_by: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


class PolicyUnavailable(Exception):
    """OPA could not be asked (unreachable, timed out, HTTP error) after retries; apply the failure policy."""


class PolicyGate(Protocol):
    async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict: ...

    async def close(self) -> None: ...

    async def policy_sources(self) -> list[str]: ...


# --------------------------------------------------------------------------------------------------------------
# Verdicts without OPA


def verdict_on_failure(
    failure_policy: str,
    *,
    current: int,
    proposed: int,
    min_replicas: int,
    max_replicas: int,
    error: str,
) -> Verdict:
    """The pool's ``spec.policy.failurePolicy`` when OPA cannot answer: Hold keeps ``current``, Allow lets the
    proposal through clamped to min/max. Anything else is treated as Hold, the safe choice, and says so."""
    if failure_policy == "Allow":
        allowed = min(max(proposed, min_replicas), max_replicas)
        return Verdict(
            allow=True,
            replicas=allowed,
            reasons=(f"policy unavailable; failurePolicy Allow: {current} -> {allowed} within min/max",),
            source="failure-policy",
            error=error,
        )
    prefix = "" if failure_policy == "Hold" else f"unknown failurePolicy {failure_policy!r} treated as Hold; "
    return Verdict(
        allow=False,
        replicas=current,
        reasons=(f"policy unavailable; {prefix}failurePolicy Hold: keeping {current} replicas",),
        source="failure-policy",
        error=error,
    )


class AllowAllGate:
    """``--opa none``: no policy gate. Every verdict allows and says the gate is disabled."""

    async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
        return Verdict(allow=True, replicas=None, reasons=("policy gate disabled",), source="disabled")

    async def close(self) -> None:
        return None

    async def policy_sources(self) -> list[str]:
        return []


# --------------------------------------------------------------------------------------------------------------
# Decision documents


def _deny(path: str, reason: str, error: str, latency: float) -> Verdict:
    return Verdict(allow=False, replicas=None, reasons=(reason,), error=error, latency_seconds=latency)


def verdict_from_result(path: str, body: Mapping[str, Any], latency: float = 0.0) -> Verdict:
    """Turn OPA's response body for ``POST /v1/data/<path>`` into a Verdict.

    No ``result`` key means the decision is undefined (a missing package, or rules that did not match and no
    ``default``): a deny that names the path. Only a structured decision object counts as a verdict: anything else
    (a plain ``true``, a number, a list) is a malformed decision and a deny, never a guess, so a policy path that
    happens to name a boolean rule cannot wave a change through.
    """
    dotted = "data." + path.replace("/", ".")
    if "result" not in body:
        return _deny(
            path,
            f"policy decision {dotted} is undefined for this input: denied",
            f"undefined decision: OPA returned no result for {dotted} (is the package loaded, does it have a default?)",
            latency,
        )
    result = body["result"]
    problem = _decision_problem(result)
    if problem:
        return _deny(path, f"policy decision {dotted} is malformed: denied", f"malformed decision: {problem}", latency)
    allow = result["allow"]
    replicas = result.get("replicas")
    reasons = result.get("reasons")
    if isinstance(reasons, str):
        reasons = [reasons]
    if not reasons:
        reasons = [f"{dotted} {'allowed' if allow else 'denied'} (no reason given)"]
    labels = result.get("labels") or {}
    return Verdict(
        allow=allow,
        replicas=None if replicas is None else int(replicas),
        reasons=tuple(str(r) for r in reasons),
        escalated=bool(result.get("escalated", False)),
        latency_seconds=latency,
        limited_by=tuple(str(g) for g in result.get("limitedBy") or ()),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
    )


def _decision_problem(result: Any) -> str | None:
    """What is wrong with a decision document, or None (policies/decision.schema.json, checked by hand)."""
    if not isinstance(result, Mapping):
        return (
            f"expected a decision object {{allow, replicas, reasons}}, got {type(result).__name__} "
            f"{json.dumps(result)[:80]}"
        )
    if not isinstance(result.get("allow"), bool):
        return "'allow' must be a boolean"
    replicas = result.get("replicas")
    if replicas is not None and (
        isinstance(replicas, bool)
        or not isinstance(replicas, (int, float))
        or not float(replicas).is_integer()
        or replicas < 0
    ):
        return f"'replicas' must be a non-negative integer or null, got {replicas!r}"
    reasons = result.get("reasons")
    if reasons is not None and not isinstance(reasons, (str, list)):
        return "'reasons' must be a list of strings"
    if "escalated" in result and not isinstance(result["escalated"], bool):
        return "'escalated' must be a boolean"
    return None


# --------------------------------------------------------------------------------------------------------------
# OPA gates


def _parse_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OPA URL must look like http://host:port, got {url!r}")
    if parts.path not in ("", "/"):
        raise ValueError(f"OPA URL must not have a path ({url!r}): the client adds /v1/data/<policy path> itself")
    https = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if https else 80), https


class OpaGate:
    """Ask an OPA server (``POST /v1/data/<path>``) through opa-python-client's ``AsyncOpaClient``.

    ``retries`` are the client's (connection errors and 500/502/504, with backoff); ``timeout`` bounds one whole
    evaluation including retries. Raises :class:`PolicyUnavailable` when OPA cannot answer.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 2,
        timeout: float = 2.0,
        token: str | None = None,
    ) -> None:
        host, port, https = _parse_url(url)
        self.url = url.rstrip("/")
        self.retries = retries
        self._client = AsyncOpaClient(host=host, port=port, ssl=https, token=token, retries=retries, timeout=timeout)
        self._opened = False
        self._lock = asyncio.Lock()

    async def _ensure_session(self) -> None:
        async with self._lock:
            if not self._opened:
                await self._client.__aenter__()  # creates the aiohttp session on the running loop
                self._opened = True

    async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
        if not POLICY_PATH_RE.match(path):
            return _deny(path, f"invalid policy path {path!r}: denied", f"invalid policy path {path!r}", 0.0)
        await self._ensure_session()
        started = time.perf_counter()
        try:
            body = await asyncio.wait_for(self._client.query_rule(input_data=input, package_path=path), timeout)
        except asyncio.TimeoutError as exc:
            raise PolicyUnavailable(f"OPA at {self.url} did not answer within {timeout:g}s") from exc
        except aiohttp.ClientResponseError as exc:
            raise PolicyUnavailable(
                f"OPA at {self.url} answered HTTP {exc.status} ({exc.message}) for data/{path}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PolicyUnavailable(
                f"OPA at {self.url} unreachable after {self.retries} retries: {exc or type(exc).__name__}"
            ) from exc
        latency = time.perf_counter() - started
        if not isinstance(body, Mapping):
            raise PolicyUnavailable(f"OPA at {self.url} answered with a non-object body for data/{path}")
        return verdict_from_result(path, body, latency)

    async def policy_sources(self) -> list[str]:
        """The source of every module the server has loaded (``GET /v1/policies``, bundles' included)."""
        await self._ensure_session()
        sources = []
        for module in await self._client.get_policies_list():
            sources.append(str(((await self._client.get_policy(module)).get("result") or {}).get("raw") or ""))
        return sources

    async def close(self) -> None:
        if self._opened:
            await self._client.close_connection()
            self._opened = False


class LocalOpaGate:
    """Start and supervise ``opa run --server`` on 127.0.0.1 from the packaged policies, then ask it.

    The child starts on the first evaluation (so constructing the gate never blocks) and is restarted whenever
    it has died. After a failed start the gate waits (1 s, doubling to 60 s) before trying again and meanwhile
    raises :class:`PolicyUnavailable`, so a missing binary or a broken policy costs nothing per tick.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]] | None = None,
        *,
        binary: str | os.PathLike[str] | None = None,
        retries: int = 1,
        start_timeout: float = 20.0,
    ) -> None:
        self.paths = [Path(p) for p in paths] if paths else [default_policies_dir()]
        self.server = OpaServer(self.paths, binary=binary)
        self.retries = retries
        self.start_timeout = start_timeout
        self.restarts = 0
        self._gate: OpaGate | None = None
        self._lock = asyncio.Lock()
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._started = False

    @property
    def url(self) -> str | None:
        return self.server.url if self._gate is not None else None

    async def _ensure_running(self) -> OpaGate:
        async with self._lock:
            if self._gate is not None and self.server.running:
                return self._gate
            if time.monotonic() < self._retry_at:
                raise PolicyUnavailable(f"local OPA is not running: {self._last_error} (retrying soon)")
            if self._gate is not None:
                self.restarts += 1
                log.warning(
                    "local OPA (pid %s) died; restarting. Log tail:\n%s", self.server.pid, self.server.log_tail()
                )
                await self._gate.close()
                self._gate = None
            try:
                url = await self.server.start(self.start_timeout)
            except (OpaNotFound, OpaStartError) as exc:
                self._backoff = min(60.0, self._backoff * 2 or 1.0)
                self._retry_at = time.monotonic() + self._backoff
                self._last_error = str(exc)
                log.error("cannot start local OPA: %s", exc)
                raise PolicyUnavailable(f"local OPA could not start: {exc}") from exc
            self._backoff = 0.0
            self._started = True
            self._gate = OpaGate(url, retries=self.retries)
            log.info("local OPA serving %s on %s", ", ".join(map(str, self.paths)), url)
            return self._gate

    async def start(self) -> str:
        """Start the child now (optional: evaluate starts it too); returns its URL."""
        gate = await self._ensure_running()
        return gate.url

    @property
    def alive(self) -> bool:
        """False once the child has run and is now dead (liveness reports it until :meth:`supervise` restarts it)."""
        return not self._started or (self._gate is not None and self.server.running)

    async def supervise(self) -> None:
        """Start a dead (or never started) child now, not when a decision next needs it (the health watchdog calls
        this every few seconds; a child that cannot start is retried with the gate's back-off)."""
        if self._gate is not None and self.server.running:
            return
        try:
            await self._ensure_running()
        except PolicyUnavailable as e:
            log.warning("local OPA still down: %s", e)

    async def evaluate(self, path: str, input: dict[str, Any], *, timeout: float = 2.0) -> Verdict:
        gate = await self._ensure_running()
        try:
            return await gate.evaluate(path, input, timeout=timeout)
        except PolicyUnavailable:
            if self.server.running:
                raise
        # The child died under us: restart once and ask again.
        gate = await self._ensure_running()
        return await gate.evaluate(path, input, timeout=timeout)

    async def policy_sources(self) -> list[str]:
        """The policies the child serves, read from their files (test modules are not loaded: OpaServer)."""
        files = [f for p in self.paths for f in ([p] if p.is_file() else sorted(p.rglob("*.rego")))]
        return [f.read_text(encoding="utf-8") for f in files if not f.name.endswith("_test.rego")]

    async def close(self) -> None:
        async with self._lock:
            if self._gate is not None:
                await self._gate.close()
                self._gate = None
            await self.server.close()


# --------------------------------------------------------------------------------------------------------------
# The input document


def _jsonable(value: Any) -> Any:
    """A plain-JSON deep copy (kopf bodies are mapping views; NaN/inf are not JSON and become null)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return _rfc3339(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.loads(json.dumps(value, default=str))


def _rfc3339(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _signal(value: Any) -> float | int | None:
    """A usable number or None: missing, NaN, ±inf and negatives are missing, never zero."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value >= 0 else None


def _count(value: Any) -> int | None:
    sig = _signal(value)
    return None if sig is None else int(sig)


def _peers(pools: Sequence[Mapping[str, Any]], exclude: str) -> list[dict[str, Any]]:
    return [
        {
            "name": str(p.get("name")),
            "replicas": _count(p.get("replicas")),
            "desiredReplicas": _count(p.get("desiredReplicas")),
        }
        for p in pools
        if p.get("name") and p.get("name") != exclude
    ]


def peer_summary(peers: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``input.namespace.others``: the other pools, their replicas, and their claims — each the larger of its current
    and desired replicas (a pool half-way through a scale-up already holds its claim); missing counts count 0."""
    current = [p.get("replicas") or 0 for p in peers]
    return {
        "pools": len(peers),
        "replicas": sum(current),
        "claimed": sum(max(c, p.get("desiredReplicas") or 0) for c, p in zip(current, peers, strict=True)),
    }


def _history(history: Mapping[str, Any]) -> dict[str, Any]:
    last_time = history.get("lastScaleTime")
    if isinstance(last_time, datetime):
        last_time = _rfc3339(last_time)
    last_dir = history.get("lastScaleDirection")
    return {
        "lastScaleTime": last_time if isinstance(last_time, str) and last_time else None,
        "lastScaleDirection": last_dir if last_dir in ("up", "down") else None,
        "secondsSinceLastScale": _signal(history.get("secondsSinceLastScale")),
    }


def _direction(current: int, recommended: int) -> str:
    return "up" if recommended > current else ("down" if recommended < current else "none")


def build_input(
    *,
    pool: Mapping[str, Any],
    current_replicas: int,
    recommended_replicas: int,
    min_replicas: int,
    max_replicas: int,
    signals: Mapping[str, float | None],
    history: Mapping[str, Any],
    now: datetime,
    namespace_pools: Sequence[Mapping[str, Any]],
    peer_list: bool = True,
    others: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The input document for OPA, exactly as ``policies/input.schema.json`` describes it.

    Only the documented keys go in (a policy must not come to depend on an accident of the operator's internals),
    this pool is left out of the namespace's view so a budget never counts it twice, and ``now`` is explicit so a
    recorded input replays to the same decision. ``namespace.others`` summarises the other pools; their list,
    ``namespace.pools``, goes in only with ``peer_list`` (chanscale.peerlist: only when a policy reads it).
    ``others`` is the summary when the caller has it already (chanscale.tenancy.other_claims), else it is summed
    from ``namespace_pools``.
    """
    meta = pool.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    annotations = {k: str(v) for k, v in (meta.get("annotations") or {}).items() if k not in _DROPPED_ANNOTATIONS}
    peers = _peers(namespace_pools, name)
    summary = dict(others) if others is not None else peer_summary(peers)
    namespace_view: dict[str, Any] = {"name": namespace, "others": summary}
    if peer_list:
        namespace_view["pools"] = peers
    return {
        "apiVersion": INPUT_API_VERSION,
        "pool": {
            "metadata": {
                "namespace": namespace,
                "name": name,
                "labels": {k: str(v) for k, v in (meta.get("labels") or {}).items()},
                "annotations": annotations,
            },
            "spec": _jsonable(pool.get("spec") or {}),
        },
        "replicas": {
            "current": int(current_replicas),
            "recommended": int(recommended_replicas),
            "min": int(min_replicas),
            "max": int(max_replicas),
        },
        "direction": _direction(current_replicas, recommended_replicas),
        "signals": {key: _signal(signals.get(key)) for key in SIGNAL_KEYS},
        "history": _history(history),
        "now": _rfc3339(now),
        "namespace": namespace_view,
    }


# --------------------------------------------------------------------------------------------------------------
# Wiring


def default_policies_dir() -> Path:
    """Where the local gate loads policies from: ``$CHANSCALE_POLICIES``, else the repository's ``policies/``
    (a source checkout, so edits take effect without a reinstall), else the copy packaged with chanscale."""
    env = os.environ.get("CHANSCALE_POLICIES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    repo = here.parents[1] / "policies"
    if (repo / "chanscale" / "main").is_dir():
        return repo
    return here / "data" / "policies"


def make_gate(opa: str | None) -> PolicyGate:
    """The gate for ``--opa``/``--opa-url``: "none" (or None) -> :class:`AllowAllGate`, "local" ->
    :class:`LocalOpaGate`, an http(s) URL -> :class:`OpaGate` (bearer token from $CHANSCALE_OPA_TOKEN)."""
    if opa is None or opa.strip().lower() in ("", "none", "off", "disabled"):
        return AllowAllGate()
    if opa.strip().lower() == "local":
        return LocalOpaGate()
    if opa.startswith(("http://", "https://")):
        return OpaGate(opa, token=os.environ.get("CHANSCALE_OPA_TOKEN") or None)
    raise ValueError(f"--opa must be 'local', 'none' or an http(s):// URL, got {opa!r}")
