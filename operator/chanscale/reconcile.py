"""One tick for one WorkerPool: read signals, decide, pass the policy gate, scale, and explain.

Framework-free (no kopf here) so the whole tick runs in unit tests with fakes; :mod:`chanscale.handlers` is the
thin kopf wrapper that feeds it the pool, the target seen through kopf's in-memory indexes, and writes the
returned status through kopf's patch object.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from . import FIELD_MANAGER, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION, adoption, direct, telemetry
from .decision import Decision, Observation, PoolState, apply_verdict, decide, record_scale
from .direct import Note
from .explain import (
    Event,
    Facts,
    brief,
    error_status,
    external_conditions,
    rfc3339,
    set_condition,
    verdict,
)
from .explain import (
    brief_query_error as brief_query_error,  # re-exported
)
from .fastpath import direct_refusal
from .faults import crash_point
from .kube import ScaleError, Scaler, template_digest
from .promauth import PrometheusAuth
from .signals import PrometheusReader, signal_errors_for_required
from .spec import PoolSpec, SpecError
from .tenancy import Guardrails, TenancyState, other_claims, other_pools, peer_claims, refusal

log = logging.getLogger("chanscale")


@dataclass
class Config:
    prometheus_url: str | None = None
    opa: str | None = "none"
    tick: float = 10.0  # the operator's timer; a pool's pollingInterval is rounded up to a multiple of it
    status_refresh: float = 300.0  # rewrite an unchanged status at most this often (observations only)
    policy_timeout: float = 2.0
    policy_peers: str = "auto"  # whether policy calls carry input.namespace.pools (chanscale.peerlist)
    query_timeout: float = 5.0
    health_url: str | None = None  # serve /healthz (this URL's path) and /readyz on its host:port
    stale_intervals: float = 3.0  # liveness fails when a pool has not been evaluated for this many ticks
    guardrails: Guardrails = field(default_factory=Guardrails)  # the admin's choices (tenancy.py)
    prometheus_auth: PrometheusAuth = field(default_factory=PrometheusAuth)  # the operator's credentials


@dataclass(frozen=True)
class Target:
    """The scale target as kopf's index last saw it."""

    name: str
    exists: bool
    replicas: int = 0
    ready: int | None = None
    conflict: str | None = None  # e.g. "HorizontalPodAutoscaler web (KEDA ScaledObject web)"
    manager: str | None = None  # the field manager that last set spec.replicas (managedFields)
    error: str | None = None  # why a /scale target could not be read (scaletarget.py): discovery, RBAC
    # () -> (the namespace's pools from kopf's WorkerPool index, {Deployment: replicas}); read under the lock.
    peers: Callable[[], tuple[list[dict[str, Any]], dict[str, int]]] | None = None


@dataclass
class TickResult:
    status: dict[str, Any] | None  # the status to write, or None when nothing material changed
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    scaled_to: int | None = None
    decision: Decision | None = None
    skipped: bool = False
    labels: dict[str, str | None] = field(default_factory=dict)  # metadata.labels to set (None removes)
    written: bool | None = None  # whether ``status`` reached the API server (None: nothing to write)


@dataclass
class PoolMemory:
    """What this process knows of one pool's status beyond kopf's (possibly lagging) body.

    ``status`` is the status as of our last tick, written or not (a failure counter is not worth a write, yet the
    next tick must count on from it); ``server`` is what the API server holds after our last successful write, at
    ``rv``. A body at least as new as ``rv`` (someone else wrote after us) replaces both.
    """

    status: dict[str, Any]
    server: dict[str, Any]
    rv: int | None
    written: str | None = None  # digest of the last status written
    written_at: float = 0.0
    state: PoolState | None = None  # the learning state, kept between ticks (status.history is its restart copy)
    parsed: tuple[dict[str, Any], PoolSpec] | None = None  # (a copy of the spec, its parse): parsed once per change

    def spec(self, raw: Mapping[str, Any]) -> PoolSpec:
        """The parsed spec, parsed again only when the spec changed (a dict comparison, not a validation per
        tick). Raises :class:`SpecError` for a bad spec, every time."""
        if self.parsed is None or self.parsed[0] != raw:
            self.parsed = None
            parsed = PoolSpec.from_dict(raw)
            self.parsed = (copy.deepcopy(dict(raw)), parsed)
        return self.parsed[1]


@dataclass
class Runtime:
    """Operator-wide state: config, the shared Prometheus reader, the policy gate, the scaler."""

    config: Config
    reader: PrometheusReader
    gate: Any  # chanscale.policy.PolicyGate
    scaler: Scaler
    wall: Any = time.time
    last_eval: dict[tuple[str, str], tuple[float, bool]] = field(default_factory=dict)  # (began, forced)
    last_written: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    last_scale_write: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    # the counts our recent writes moved away from, with when: an index still showing one of them is behind us
    scaled_from: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)
    # (replicas, when) a pool was allowed to scale to, recorded under the namespace's lock before the writes: the
    # other pools' budget checks count it from that moment (see _tick)
    reserved: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    writer: Any = None  # kube.StatusWriter; None keeps writes in ``memory_writes`` (unit tests)
    memory: dict[tuple[str, str], PoolMemory] = field(default_factory=dict)
    evaluated: dict[tuple[str, str], float] = field(default_factory=dict)  # last tick of any kind (liveness)
    memory_writes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    tenancy: TenancyState = field(default_factory=TenancyState)
    scale_any: Any = None  # scaletarget.ScaleSubresource: targets other than Deployments
    direct: Any = None  # direct.DirectPath with --direct-metrics (its readings are taken by the fast path)
    # whether this policy call carries the namespace's pool list (chanscale.peerlist); None: it always does
    peer_list: Callable[[], Awaitable[bool]] | None = None

    def index_lag_start(self, now: float) -> float:
        """Writes after this moment may not be in kopf's indexes yet (two ticks: the window our own writes win)."""
        return now - 2 * self.config.tick

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        for d in (
            self.last_eval,
            self.last_written,
            self.last_scale_write,
            self.scaled_from,
            self.reserved,
            self.memory,
            self.evaluated,
            self.tenancy.template_errors,
        ):
            d.pop(key, None)
        telemetry.forget_pool(namespace, name)


def is_paused(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    ann = (meta.get("annotations") or {}).get(PAUSED_ANNOTATION)
    if isinstance(ann, str) and ann.lower() == "true":
        return f"annotation {PAUSED_ANNOTATION}=true"
    held = adoption.paused_replicas(meta)
    if held is not None:
        return f"annotation {PAUSED_REPLICAS_ANNOTATION}={held}: held at {held} replicas"
    if spec.get("paused") is True:
        return "spec.paused is true"
    return None


def due(rt: Runtime, key: tuple[str, str], spec: PoolSpec, now: float) -> bool:
    """Whether this evaluation is owed. The ticker (or kopf's timer) starts a pool once per ``tick``, at its slot.

    - At the tick's own interval, a slot is skipped only if the fast path evaluated the pool within the last half
      tick: that evaluation stands for it. A scheduled evaluation that began late (it waited for a place) does not
      make the next slot early: measured from its start, on-time slots looked early under load and were skipped,
      doubling the pool's gap.
    - A longer ``pollingInterval`` counts from the last evaluation, with half a tick's tolerance.
    """
    interval, half = spec.polling_interval or rt.config.tick, rt.config.tick / 2
    last = rt.last_eval.get(key)
    if last is None:
        return True
    at, forced = last
    if interval <= rt.config.tick:
        return not forced or now - at >= half
    return now - at >= interval - half


def merge_patch(old: Any, new: Any) -> Any:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (keys that disappeared become ``None``).

    Status is written as a merge patch, which keeps keys it does not mention; without this, a field that a
    later decision no longer has (a note, a quiet-tick marker) would linger from an earlier one.
    """
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old:
            out[k] = v
        elif old[k] != v:
            out[k] = merge_patch(old[k], v)
    return out


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The status keys to patch: every key chanscale writes, diffed below the top level (top-level keys that
    chanscale does not write, such as another controller's, are left alone)."""
    return {k: merge_patch(old.get(k), v) for k, v in new.items() if old.get(k) != v}


# ------------------------------------------------------------------------------------------ status memory and writes
def _rv(body: Mapping[str, Any]) -> int | None:
    """The body's resourceVersion as a number (etcd revisions grow; a non-numeric one is never compared)."""
    try:
        return int(str((body.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def _memory(rt: Runtime, key: tuple[str, str], body: Mapping[str, Any]) -> PoolMemory:
    """This pool's memory, replaced by the body when the body is newer than our last write (kopf's view lags our
    own writes by a watch event; a user's spec edit or a restart makes the body the truth)."""
    rv, mem = _rv(body), rt.memory.get(key)
    if mem is None or (rv is not None and (mem.rv is None or rv > mem.rv)):
        server = {k: v for k, v in (body.get("status") or {}).items() if k != "kopf"}
        prev = mem
        mem = PoolMemory(status=dict(server), server=server, rv=rv)
        if prev is not None:  # a newer body: what we wrote is in it; keep the write bookkeeping and the learning
            mem.written, mem.written_at, mem.state, mem.parsed = prev.written, prev.written_at, prev.state, prev.parsed
            mem.status = _carry_counters(prev.status, mem.status)
        rt.memory[key] = mem
    return mem


def _carry_counters(mine: Mapping[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Counters we keep without writing them (not material) survive a newer body that lacks them."""
    mine_h, theirs_h = mine.get("history") or {}, theirs.get("history") or {}
    if mine_h.get("consecutiveFailures") and theirs_h:
        theirs = {**theirs, "history": {**theirs_h, "consecutiveFailures": mine_h["consecutiveFailures"]}}
    return theirs


def _masked(limited: Any) -> list[str]:
    """Limits without their numbers: a fallback's "after 7 failed reads" must not rewrite the status every tick."""
    return [re.sub(r"[0-9.]+", "#", str(x)) for x in limited or ()]


def _runs_started(history: Mapping[str, Any]) -> list[Any]:
    return [[r[0], r[-1]] for r in history.get("recommendations") or () if isinstance(r, list) and r]


def _degraded(status: Mapping[str, Any]) -> bool:
    """A dependency (Prometheus, OPA) is down: the model's moving numbers are observations then, not verdicts."""
    reasons = {(c.get("type"), c.get("reason")) for c in status.get("conditions") or []}
    return ("PolicyAllowed", "PolicyUnavailable") in reasons or any(
        t == "MetricsAvailable" and r != "SignalsRead" for t, r in reasons
    )


def _material(status: Mapping[str, Any]) -> str:
    """A digest of what makes a status write worth it: not the ever-moving observations, not failure counters,
    not numbers inside reasons (a fallback's "after 7 failed reads" would otherwise rewrite every tick).

    While a dependency is down, the model's recommendation (its stabilisation runs, the count it proposes) is
    an observation too: it moves with a growing backlog every tick but changes nothing the operator does, so it is
    written with the next refresh (a crash in an outage forgets at most ``status_refresh`` seconds of it).
    """
    d = status.get("lastDecision") or {}
    h = status.get("history") or {}
    ext = status.get("externalWriter") or {}
    degraded = _degraded(status)
    keep = {
        "replicas": status.get("replicas"),
        # ...and so is the count it proposes: what is applied shows in replicas, outcome and applied
        "desired": None if degraded else status.get("desiredReplicas"),
        "recommended": None if degraded else status.get("recommendedReplicas"),
        "conditions": [(c["type"], c["status"], c.get("reason")) for c in status.get("conditions", [])],
        "decision": (
            d.get("outcome"),
            d.get("from"),
            None if degraded else d.get("to"),
            d.get("applied"),
            _masked(d.get("limitedBy")),
        ),
        "verdicts": _sorted_items(status.get("verdicts")),
        # A run's last sample moves every tick: an observation, written with the refresh (its first sample and
        # value are material).
        "history": (None if degraded else _runs_started(h), h.get("scaleEvents"), _sorted_items(h.get("pending"))),
        "external": (ext.get("writer"), ext.get("to"), ext.get("holdUntil")),
        "gen": status.get("observedGeneration"),
        "target": status.get("targetName"),
    }
    # repr, not a JSON digest: the same comparison for a fifth of the cost (this runs at every evaluation); the
    # two mappings in it are sorted, so the order their keys were set in does not count.
    return repr(keep)


def _sorted_items(m: Any) -> Any:
    return tuple(sorted(m.items(), key=lambda kv: str(kv[0]))) if isinstance(m, Mapping) else m


#: The learnt service rate or service-time variability has moved enough to be worth a write when it is this far
#: (relative) from the copy in the status: the HPA's scale-down tolerance, within which a decision does not move.
LEARNING_TOLERANCE = 0.1


def learning_moved(written: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether a restart from the ``written`` status would decide differently from one from ``status``, beyond what
    the refresh bounds: μ or the service-time SCV moved by more than :data:`LEARNING_TOLERANCE`, or the channel
    went idle since (its last active time starts the idle countdown to minReplicas, so that time is written once,
    when activity stops, not left a refresh old). Observations that move every tick (the backlog sample, the
    current run's last sample, the metrics) are not here: a restart re-reads them, and
    :meth:`chanscale.decision.PoolState.resumed` carries the current run over the gap."""
    a, b = written.get("history") or {}, status.get("history") or {}
    if _moved(a.get("serviceRate"), b.get("serviceRate")):
        return True
    if _moved(_wait_factor(a.get("serviceScv")), _wait_factor(b.get("serviceScv"))):
        return True
    went_idle = b.get("lastActive") != b.get("at") and b.get("lastActive") != a.get("lastActive")
    return bool(went_idle)


def _wait_factor(scv: Any) -> float | None:
    """(1 + SCV) / 2, what the M/G/c waits scale by: the SCV's effect on a decision."""
    return (1.0 + scv) / 2.0 if isinstance(scv, (int, float)) else None


def _moved(a: Any, b: Any) -> bool:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return isinstance(a, (int, float)) != isinstance(b, (int, float))
    return abs(b - a) > LEARNING_TOLERANCE * abs(a)


async def _write_status(
    rt: Runtime, key: tuple[str, str], mem: PoolMemory, status: dict[str, Any], now: float, material: str | None = None
) -> bool:
    """Merge-patch ``status`` over what the server holds. False (logged, retried next tick) when it fails.
    ``material``: the status's :func:`_material` digest, if the caller has it."""
    from .kube import StatusWriteError

    patch = status_patch(mem.server, status)
    if not patch:
        return True
    try:
        if rt.writer is None:
            rt.memory_writes.append((key[0], key[1], patch))
            rv = None if mem.rv is None else mem.rv + 1
        else:
            written = await rt.writer.write_status(key[0], key[1], patch)
            rv = int(written) if written and written.isdigit() else None
    except StatusWriteError as e:
        log.warning("pool %s/%s: status write failed (retrying next tick): %s", key[0], key[1], e)
        return False
    telemetry.STATUS_WRITES.labels(*key).inc()
    mem.server, mem.rv = status, rv
    mem.written, mem.written_at = material or _material(status), now
    return True


async def _finish(
    rt: Runtime, key: tuple[str, str], mem: PoolMemory, status: dict[str, Any], now: float, result: TickResult
) -> TickResult:
    """Remember the status; write it only on a material change (or every ``status_refresh`` for observations)."""
    mem.status = status
    material = _material(status)
    fresh = now - mem.written_at < rt.config.status_refresh
    if mem.written == material and fresh and not learning_moved(mem.server, status):
        result.status = None
    else:
        result.status = status
        result.written = await _write_status(rt, key, mem, status, now, material)
    if result.labels:
        await _write_labels(rt, key, result.labels)
    return result


async def _write_labels(rt: Runtime, key: tuple[str, str], labels: Mapping[str, str | None]) -> None:
    from .kube import StatusWriteError

    if rt.writer is None:
        return
    try:
        await rt.writer.write_labels(key[0], key[1], labels)
    except StatusWriteError as e:
        log.warning("pool %s/%s: label write failed (retrying next tick): %s", key[0], key[1], e)


# ------------------------------------------------------------------------------------------------------ the tick
async def tick(rt: Runtime, body: Mapping[str, Any], target: Target | None, *, force: bool = False) -> TickResult:
    """Evaluate one pool. Never raises for a bad pool: problems become conditions and Events."""
    meta, spec_raw = body.get("metadata", {}), body.get("spec") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    now = rt.wall()
    rt.evaluated[key] = now
    mem = _memory(rt, key, body)
    old = mem.status
    try:
        spec = mem.spec(spec_raw)
    except SpecError as e:
        return await _fail(rt, key, mem, old, gen, now, None, "InvalidSpec", f"invalid spec: {e}")
    if not force and not due(rt, key, spec, now):
        return TickResult(status=None, skipped=True)
    rt.last_eval[key] = (now, force)
    started = time.perf_counter()
    try:
        return await _tick(rt, body, mem, spec, target, now)
    except Exception as e:  # never let one pool take the operator down
        log.exception("pool %s/%s: unexpected error", ns, name)
        msg = brief(ns, name, f"internal error: {type(e).__name__}: {e}")
        return await _fail(rt, key, mem, old, gen, now, None, "InternalError", msg)
    finally:
        telemetry.DECISION_SECONDS.observe(time.perf_counter() - started)


async def _fail(
    rt: Runtime,
    key: tuple[str, str],
    mem: PoolMemory,
    old: Mapping[str, Any],
    gen: int,
    now: float,
    target_name: str | None,
    reason: str,
    message: str,
) -> TickResult:
    """Ready=False with ``reason``; one Warning Event per change of reason."""
    telemetry.DECISIONS.labels(key[0], key[1], "Error").inc()
    status = error_status(old, gen, now, reason, message, target_name)
    events: list[tuple[str, str, str]] = []
    verdicts = dict(old.get("verdicts") or {})
    verdict(old.get("verdicts") or {}, verdicts, "ready", reason, ("Warning", reason, message), events)
    status["verdicts"] = verdicts
    return await _finish(rt, key, mem, status, now, TickResult(status=None, events=events))


def resolve_pending(old: Mapping[str, Any], deployed: int) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
    """Reconcile a write-ahead scale intent (``status.history.pending``) left by a crash with the Deployment.

    The intent is written, with its scale event in ``history.scaleEvents``, *before* the scale, so a restart can
    tell what reached the Deployment: at ``to`` the scale happened (keep the event, post the lost Event); at
    ``from`` it did not (drop the event); anything else is another writer (keep the event: counting a scale that
    may have happened is the safe side of a rate limit). Returns the status without ``pending`` and an Event.
    """
    h = dict(old.get("history") or {})
    pending = h.pop("pending", None)
    if not isinstance(pending, Mapping):
        return dict(old), None
    frm, to, at = pending.get("from"), pending.get("to"), pending.get("time")
    event: tuple[str, str, str] | None
    if deployed == to:
        event = ("Normal", "Scaled", f"{frm} -> {to} (recorded before the scale; confirmed after an operator restart)")
    elif deployed == frm:
        h["scaleEvents"] = [e for e in h.get("scaleEvents") or [] if not (e and e[0] == at)]
        event = None
    else:
        event = None
    new = {**old, "history": h}
    if deployed in (frm, to):
        new["replicas"] = deployed
    return new, event


def external_change(
    spec: PoolSpec, old: Mapping[str, Any], target: Target, current: int, now: float
) -> dict[str, Any] | None:
    """The ``status.externalWriter`` record: a new one when ``spec.replicas`` moved since our last look and the
    field manager that moved it is not chanscale; else the previous record (None if there never was one)."""
    prev = old.get("externalWriter")
    seen = old.get("replicas")
    if seen is None or current == seen or target.manager == FIELD_MANAGER:
        return dict(prev) if isinstance(prev, Mapping) else None
    until = now + spec.external_scale.cooldown_seconds
    return {
        "writer": target.manager or "unknown (no managedFields entry)",
        "from": seen,
        "to": current,
        "time": rfc3339(now),
        "action": spec.external_scale.action,
        "holdUntil": rfc3339(until),
        "until": until,
    }


def _current(rt: Runtime, key: tuple[str, str], target: Target, now: float) -> int:
    """Our own recent write wins over an index that has not caught up with it yet: one that still shows a count
    our recent writes moved away from. Any other count is newer than our write (another writer's): the target's."""
    written = rt.last_scale_write.get(key)
    recent = rt.index_lag_start(now)
    behind = {count for count, at in rt.scaled_from.get(key, ()) if at > recent}
    if written is not None and written[1] > recent and target.replicas in behind:
        return written[0]
    return target.replicas


# ------------------------------------------------------------------------------------------ the tick, stage by stage
# observe → decide → gate → act → explain. Each stage is a function; only observe, gate and act do I/O.


@dataclass
class Observed:
    """What the observe stage saw: the status to build on, the current count, the signals."""

    ns: str
    name: str
    gen: int
    target_name: str
    old: dict[str, Any]  # the status as of the last tick, a crash's pending scale resolved
    current: int
    obs: Observation
    paused: str | None
    ext: dict[str, Any] | None
    events: list[Event]
    shadow_of: str | None = None  # a DryRun pool beside the autoscaler that owns the target (adoption.py)
    direct: Note | None = None  # an opted-in pool: whether the backlog came from its pods (direct.py)


async def _tick(
    rt: Runtime, body: Mapping[str, Any], mem: PoolMemory, spec: PoolSpec, target: Target | None, now: float
) -> TickResult:
    started = time.perf_counter()
    seen = await _observe(rt, body, mem, spec, target, now)
    if isinstance(seen, TickResult):
        return seen
    facts = _decide(spec, seen, body, now, _learnt(mem, seen.old, now))
    acted: PoolState | TickResult | None = None
    act = False
    if facts.decision.desired != seen.current:
        # Gate and reserve under the namespace's lock, so two pools cannot spend the same budget headroom: the next
        # pool's check counts this reservation (_peers) before any write of ours. The writes happen after the lock
        # is released, so pools queue for a policy call, not for API round trips. A pool that proposes no change
        # spends nothing and does not take the lock.
        async with rt.tenancy.locks(seen.ns):
            await _gate_stage(rt, facts, seen, target)
            act = facts.decision.desired != seen.current and facts.mode == "Active"
            if act:
                rt.reserved[(seen.ns, seen.name)] = (facts.decision.desired, now)
    telemetry.VERDICT_SECONDS.observe(time.perf_counter() - started)
    if act:
        acted = await _act(rt, facts, mem, seen)
    if isinstance(acted, TickResult):  # the intent or the scale could not be written: reported
        return acted
    if acted is not None:  # scaled: the decision's status is written after the lock is released
        result = await _explain(rt, facts, mem, seen, applied=True, state=acted)
        crash_point("after-status")
        return result
    return await _explain(rt, facts, mem, seen, applied=False, state=facts.decision.state)


async def _observe(
    rt: Runtime, body: Mapping[str, Any], mem: PoolMemory, spec: PoolSpec, target: Target | None, now: float
) -> Observed | TickResult:
    """Preconditions (guardrails, the target, another autoscaler), the current count, and the signals."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    key = (ns, name)
    gen = int(meta.get("generation") or 0)
    target_name = spec.target_name(name)
    old = mem.status
    failed = _precondition(rt, key, meta, spec, target, target_name)
    if failed is not None:
        return await _fail(rt, key, mem, old, gen, now, target_name, *failed)
    assert target is not None  # _precondition fails a missing target
    events: list[Event] = []
    if (old.get("history") or {}).get("pending"):
        old, recovered = resolve_pending(old, target.replicas)
        events += [recovered] if recovered else []
    current = _current(rt, key, target, now)
    paused = is_paused(meta, body.get("spec") or {})
    ext = external_change(spec, old, target, current, now) if not paused and spec.mode == "Active" else None
    ext = ext or (dict(old["externalWriter"]) if isinstance(old.get("externalWriter"), Mapping) else None)
    sig = await rt.reader.read(ns, spec)
    obs = Observation(
        now=now,
        current_replicas=current,
        ready_replicas=target.ready,
        age_seconds=sig.age_seconds,
        error=signal_errors_for_required(sig),
        **sig.values,
    )
    obs, note = _direct(rt, key, body.get("spec") or {}, spec, obs)
    return Observed(ns, name, gen, target_name, dict(old), current, obs, paused, ext, events, target.conflict, note)


def _direct(
    rt: Runtime, key: tuple[str, str], raw: Mapping[str, Any], spec: PoolSpec, obs: Observation
) -> tuple[Observation, Note | None]:
    """An opted-in pool's backlog from its pods' /metrics when the direct path has a valid, fresh reading
    (chanscale.direct.merge); Prometheus' otherwise. Not opted in: nothing to say."""
    if not direct.opted_in(raw):
        return obs, None
    if rt.direct is None:
        why = "the operator runs without the direct path (--direct-metrics, Helm directMetrics.enabled)"
        return obs, Note(False, direct.DISABLED, why)
    refused = direct_refusal(raw, key[1], rt.config.prometheus_url)
    if refused is not None:
        return obs, refused
    backlog, age, note = direct.merge(
        rt.direct.readings.get(key),
        obs.backlog,
        obs.age_seconds,
        obs.now,
        rt.direct.max_age,
        spec.metrics.stale_after_seconds,
    )
    return (replace(obs, backlog=backlog, backlog_age_seconds=age) if note.used else obs), note


def _precondition(
    rt: Runtime,
    key: tuple[str, str],
    meta: Mapping[str, Any],
    spec: PoolSpec,
    target: Target | None,
    target_name: str,
) -> tuple[str, str] | None:
    """(reason, message) when the pool must not be scaled at all this tick."""
    ns, name = key
    refused = refusal(rt.config.guardrails, spec, ns, meta, rt.config.prometheus_url)
    if refused is not None:  # the admin's guardrails: never scaled, the condition names the field and the fix
        return refused.reason, refused.message
    if target is None or not target.exists:
        rejected = rt.tenancy.template_errors.get(key)
        if spec.template is not None and rejected is not None and rejected[0] == template_digest(spec.template):
            return "TemplateRejected", brief(
                ns, name, f"the API server refused the Deployment from spec.template: {rejected[1]}"
            )
        how = "spec.template (being created)" if spec.template is not None else "spec.scaleTargetRef.name"
        if target is not None and target.error:
            return "TargetUnreadable", f"cannot read the scale of {spec.scale_kind} {ns}/{target_name}: {target.error}"
        return "TargetNotFound", f"{spec.scale_kind} {ns}/{target_name} not found: check {how}"
    if target.conflict and spec.mode != "DryRun":  # a DryRun pool never writes: it shadows (adoption.py)
        return "TargetConflict", (
            f"{spec.scale_kind} {ns}/{target_name} is already scaled by {target.conflict}; two autoscalers would "
            "fight. Delete it, point this WorkerPool at another Deployment, or set mode: DryRun to shadow it."
        )
    return None


def _learnt(mem: PoolMemory, old: Mapping[str, Any], now: float) -> PoolState:
    """The learning state to decide on: the one kept in memory, unless ``status.history`` holds a newer one (after a
    restart there is none in memory; after a hand-over from another replica the status copy may be newer). A
    restored state carries its current run over the gap (:meth:`PoolState.resumed`)."""
    mine, history = mem.state, old.get("history") or {}
    if mine is not None and mine.at is not None:
        at = history.get("at")  # parsed below only when it may be newer: most ticks keep their memory
        if not isinstance(at, (int, float)) or at <= mine.at:
            return mine
    stored = PoolState.from_status(history)
    if mine is None or (stored.at is not None and (mine.at is None or stored.at > mine.at)):
        return stored.resumed(now)
    return mine


def _decide(spec: PoolSpec, seen: Observed, body: Mapping[str, Any], now: float, state: PoolState) -> Facts:
    """The model's decision (pure), and the mode it is taken in (Active, DryRun, Paused, or HoldOff after another
    writer moved the Deployment)."""
    decision = decide(spec, state, seen.obs)
    hold_at = adoption.paused_replicas(body.get("metadata") or {})
    if hold_at is not None:  # KEDA's paused-replicas: scale to N and hold, through the same gate and write path
        decision = adoption.pin(decision, hold_at)
    conditions = [dict(c) for c in seen.old.get("conditions") or []]
    hold, ext_key, ext_msg = external_conditions(spec, seen.ext, seen.target_name, now, conditions, seen.gen)
    mode = "Paused" if seen.paused and hold_at is None else "HoldOff" if hold else spec.mode
    facts = Facts(
        body,
        spec,
        decision,
        None,
        seen.obs,
        seen.old,
        conditions,
        seen.ns,
        seen.name,
        seen.target_name,
        seen.gen,
        now,
        mode,
        paused=seen.paused,
        ext=seen.ext,
    )
    verdict(
        seen.old.get("verdicts") or {},
        facts.verdicts,
        "external",
        ext_key,
        ("Warning", "ExternalScale", ext_msg),
        seen.events,
    )
    return facts


async def _gate_stage(rt: Runtime, facts: Facts, seen: Observed, target: Target | None) -> None:
    """A proposed change goes to the policy gate (holding off proposes nothing)."""
    if facts.decision.desired != seen.current and facts.mode != "HoldOff":
        facts.decision, facts.verdict_info = await _gate(
            rt, facts.body, facts.spec, facts.decision, seen.current, facts.now, target
        )


async def _act(rt: Runtime, facts: Facts, mem: PoolMemory, seen: Observed) -> PoolState | TickResult:
    """Scale, crash-safely: write the intent (the scale event plus ``history.pending``) first, then scale; the
    caller then writes the decision and clears the intent (:func:`_explain`). A crash between any two steps leaves
    a status that :func:`resolve_pending` reconciles. The intent write touches ``status.history`` only, so nothing
    reading the status (replicas, conditions, the decision) sees a scale before the Deployment has it. Returns the
    learning state with the scale recorded, or the failure's result."""
    key, now, d, current = (seen.ns, seen.name), facts.now, facts.decision, seen.current
    state = record_scale(d.state, now=now, from_replicas=current, to_replicas=d.desired)
    pending = {"from": current, "to": d.desired, "time": round(now, 3)}
    ahead = {**mem.server, "history": {**state.to_status(), "pending": pending}}
    crash_point("before-intent")
    if not await _write_status(rt, key, mem, ahead, now):
        msg = "could not record the scale intent in status (API server unreachable); not scaling"
        return await _fail(rt, key, mem, seen.old, seen.gen, now, seen.target_name, "StatusWriteFailed", msg)
    mem.status = ahead
    crash_point("after-intent")
    try:
        if facts.spec.scales_deployment:
            await rt.scaler.scale(seen.ns, seen.target_name, d.desired)
        else:  # any kind with a /scale subresource (scaletarget.py)
            ref = facts.spec
            await rt.scale_any.scale(seen.ns, ref.scale_api_version, ref.scale_kind, seen.target_name, d.desired)
    except ScaleError as e:
        reason = e.reason if e.reason != "ApiError" else "ScaleFailed"
        return await _fail(rt, key, mem, seen.old, seen.gen, now, seen.target_name, reason, brief(*key, str(e)))
    crash_point("after-scale")
    rt.last_scale_write[key] = (d.desired, now)
    moved = [(c, t) for c, t in rt.scaled_from.get(key, ()) if t > rt.index_lag_start(now)]
    rt.scaled_from[key] = [*moved, (current, now)]
    telemetry.SCALES.labels(seen.ns, seen.name, "up" if d.desired > current else "down").inc()
    seen.events.append(("Normal", "Scaled", f"{current} -> {d.desired}: {d.reason}"))
    return state


async def _explain(
    rt: Runtime, facts: Facts, mem: PoolMemory, seen: Observed, *, applied: bool, state: PoolState
) -> TickResult:
    """Build the status, Events and labels (:mod:`chanscale.explain`, pure), publish the metrics, write."""
    d, events = facts.decision, seen.events
    if not applied:
        if d.desired != seen.current and facts.mode != "HoldOff":
            would = ("Normal", "WouldScale", f"[{facts.mode}] would scale {seen.current} -> {d.desired}: {d.reason}")
            verdict(seen.old.get("verdicts") or {}, facts.verdicts, "would", f"{facts.mode}:{d.desired}", would, events)
        else:
            facts.verdicts.pop("would", None)
    replicas = d.desired if applied else d.current
    mem.state = state
    status = facts.status(replicas, applied=applied, state=state, events=events)
    adoption.shadow(status, seen.old, seen.shadow_of, facts.now, seen.current, d.desired, seen.gen, set_condition)
    _explain_direct(status, seen, facts.now)
    _publish_metrics(facts, replicas)
    result = TickResult(status=None, events=events, scaled_to=d.desired if applied else None, decision=d)
    result.labels = facts.labels()
    return await _finish(rt, (seen.ns, seen.name), mem, status, facts.now, result)


def _explain_direct(status: dict[str, Any], seen: Observed, now: float) -> None:
    """The ``DirectMetrics`` condition of an opted-in pool (typed reason), ``signals.backlogSource``, and one Event
    per change of reason; a pool that is not opted in carries neither."""
    note, verdicts = seen.direct, status.setdefault("verdicts", {})
    if note is None:
        status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != "DirectMetrics"]
        verdicts.pop("direct", None)
        return
    flag = "True" if note.used else "False"
    set_condition(status["conditions"], "DirectMetrics", flag, note.reason, note.message, now, seen.gen)
    status.setdefault("signals", {})["backlogSource"] = "pods" if note.used else "prometheus"
    pool = f"WorkerPool {seen.ns}/{seen.name}"
    event = ("Normal" if note.used else "Warning", note.reason, f"{pool}: {note.message}")
    verdict(seen.old.get("verdicts") or {}, verdicts, "direct", note.reason, event, seen.events)


def _publish_metrics(facts: Facts, replicas: int) -> None:
    d, ns, name = facts.decision, facts.ns, facts.name
    telemetry.child(telemetry.DECISIONS, ns, name, facts.outcome).inc()
    slo_met = {True: 1, False: 0, None: -1}[d.slo_met]
    telemetry.publish_pool(ns, name, (replicas, d.desired, d.recommendation, slo_met, 1 if d.metrics_ok else 0))


#: How long one pass over a namespace's pools (kopf's indexes) serves its budget checks. Our own writes and
#: reservations are added fresh at every check; only others' changes (another replica's, a user's) may show this
#: much later than the index has them. A scale-down, which cannot raise the namespace's total (the budget policy
#: limits scale-ups only), takes the last pass's sums for up to a tick: at 5 000 pools in a namespace a pass costs
#: tens of milliseconds, and most proposals of a churning fleet are the steps of a scale-down.
PEER_CLAIMS_TTL = 1.0


def _peers(
    rt: Runtime, ns: str, name: str, target: Target | None, now: float, with_list: bool, rising: bool = True
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """The namespace's other pools for the budget guard, summed (and one by one ``with_list``): kopf's indexes plus
    our own recent reservations and writes (the index lags them). ``rising``: a scale-up (see PEER_CLAIMS_TTL)."""
    if target is None or target.peers is None:
        return {"pools": 0, "replicas": 0, "claimed": 0}, []
    recent: dict[str, int] = {}
    for writes in (rt.last_scale_write, rt.reserved):  # a reservation is at least as new as the last write
        recent.update({n: r for (pns, n), (r, t) in writes.items() if pns == ns and t > rt.index_lag_start(now)})
    cache, clock = rt.tenancy.peer_claims, time.monotonic()
    held = cache.get(ns)
    ttl = min(PEER_CLAIMS_TTL, rt.config.tick / 4) if rising else rt.config.tick
    if held is None or not 0 <= clock - held[0] < ttl:
        held = cache[ns] = (clock, peer_claims(*target.peers()))
    claims = held[1]
    return other_claims(claims, recent, name), (other_pools(claims, recent, name) if with_list else [])


async def _gate(
    rt: Runtime,
    body: Mapping[str, Any],
    spec: PoolSpec,
    decision: Decision,
    current: int,
    now: float,
    target: Target | None = None,
) -> tuple[Decision, dict[str, Any]]:
    from .policy import PolicyUnavailable, build_input, verdict_on_failure

    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    st = decision.state
    with_list = rt.peer_list is None or await rt.peer_list()
    others, pools = _peers(rt, ns, name, target, now, with_list, rising=decision.desired > current)
    doc = build_input(
        pool={
            "metadata": {k: meta.get(k) for k in ("namespace", "name", "labels", "annotations")},
            "spec": body.get("spec") or {},
        },
        current_replicas=current,
        recommended_replicas=decision.desired,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        signals={**decision.signals},
        history={
            "lastScaleTime": rfc3339(st.last_scale_time) if st.last_scale_time else None,
            "lastScaleDirection": st.last_scale_direction,
            "secondsSinceLastScale": (now - st.last_scale_time) if st.last_scale_time else None,
        },
        now=datetime.fromtimestamp(now, tz=timezone.utc),
        namespace_pools=pools,
        others=others,
        peer_list=with_list,
    )
    path = rt.config.guardrails.policy_path(spec.policy.profile) or ""  # refusal() has checked it is published
    started = time.perf_counter()
    try:
        verdict = await rt.gate.evaluate(path, doc, timeout=rt.config.policy_timeout)
    except PolicyUnavailable as e:
        verdict = verdict_on_failure(
            rt.config.guardrails.failure_policy,
            current=current,
            proposed=decision.desired,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            error=str(e),
        )
    finally:
        telemetry.POLICY_SECONDS.observe(time.perf_counter() - started)
    proposed = decision.desired
    reasons = list(verdict.reasons)
    if verdict.error and verdict.error not in " ".join(reasons):
        reasons.append(verdict.error)
    decided = apply_verdict(decision, allow=verdict.allow, replicas=verdict.replicas, reasons=reasons, spec=spec)
    info = {
        "allow": verdict.allow,
        "replicas": verdict.replicas,
        "proposed": proposed,
        "reasons": reasons,
        "escalated": verdict.escalated,
        "source": verdict.source,
        "error": verdict.error,
        "profile": spec.policy.profile,
        "path": path,
        "latencySeconds": round(verdict.latency_seconds, 5),
        "limitedBy": list(verdict.limited_by),
        "labels": dict(verdict.labels),
    }
    return decided, info
