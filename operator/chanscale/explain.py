"""Explain a decision: the pure stage at the end of a tick.

From what a tick observed, decided and was allowed to do, build the status chanscale writes (conditions,
``lastDecision``, history), the Events (one per change of verdict), the labels a policy asks for, and — for a
human — :func:`explain_text`. No I/O (an over-long error text is logged once under a short reference); the
typed limit reasons come from :mod:`chanscale.limits`.

To add a condition: set it in :meth:`Facts.conditions` (or a helper it calls) with :func:`set_condition`; add
its type to :data:`CONDITION_TYPES`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .adoption import activity
from .decision import Decision, Observation, PoolState
from .limits import kind_of
from .spec import PoolSpec

log = logging.getLogger("chanscale")

Event = tuple[str, str, str]  # (type, reason, message)

CONDITION_TYPES = (
    "Ready",
    "MetricsAvailable",
    "PolicyAllowed",
    "SLOMet",
    "ScalingLimited",
    "Paused",
    "Fallback",
    "ExternalWriter",
)


_LAST_RFC3339: list[tuple[int | None, str]] = [(None, "")]  # (whole second, its text): a second's evaluations share it


def rfc3339(ts: float) -> str:
    second, held = math.floor(ts), _LAST_RFC3339[0]
    if held[0] != second:
        held = _LAST_RFC3339[0] = (
            second,
            datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    return held[1]


def set_condition(
    conditions: list[dict[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    now: float,
    generation: int,
) -> None:
    """Upsert a condition; ``lastTransitionTime`` moves only when the status changes."""
    for c in conditions:
        if c.get("type") == ctype:
            if c.get("status") != status:
                c["lastTransitionTime"] = rfc3339(now)
            c.update(status=status, reason=reason, message=message[:1024], observedGeneration=generation)
            return
    conditions.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message[:1024],
            "lastTransitionTime": rfc3339(now),
            "observedGeneration": generation,
        }
    )


# ------------------------------------------------------------------------------------------------ verdicts and Events
def brief(ns: str, name: str, text: str, limit: int = 200) -> str:
    """A short human message from an error (a ConnectionError with a URL-encoded query, an API server's
    validation text): a longer one goes to the log once, referenced by a short id. Policy reasons and limits are
    human already and are not shortened."""
    first = text.splitlines()[0] if text else ""
    if len(first) <= limit and first == text:
        return text
    return f"{first[: limit - 20].rstrip()}… (log ref {_log_ref(ns, name, text)})"


def _log_ref(ns: str, name: str, text: str) -> str:
    """Log ``text`` once under a short id and return the id. Keyed without digits: a counter, a port or a latency
    inside the text must not log (and re-reference) it every tick."""
    ref = hashlib.sha1(f"{ns}/{name}:{re.sub(r'[0-9.]+', '#', text)}".encode()).hexdigest()[:8]
    if ref not in _LOGGED_REFS:
        _LOGGED_REFS[ref] = None
        if len(_LOGGED_REFS) > 4096:
            _LOGGED_REFS.pop(next(iter(_LOGGED_REFS)))
        log.warning("pool %s/%s [ref %s]: %s", ns, name, ref, text)
    return ref


_ERROR_KIND = re.compile(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Timeout))\b|\b(HTTP [0-9]{3})\b")


def brief_query_error(ns: str, name: str, text: str) -> str:
    """ "Prometheus query failed for backlog, arrivalRate: ConnectionError (log ref 1a2b3c4d)" from the reader's
    "signal: error; signal: error" text (whose errors carry URLs with the URL-encoded query)."""
    signals = [part.split(":", 1)[0].strip() for part in text.split("; ") if ":" in part]
    found = _ERROR_KIND.search(text)
    if found is None:
        return brief(ns, name, text)
    kind = found.group(1) or found.group(2)
    return f"Prometheus query failed for {', '.join(signals) or 'signals'}: {kind} (log ref {_log_ref(ns, name, text)})"


_LOGGED_REFS: dict[str, None] = {}


def verdict(
    old: Mapping[str, Any],
    new: dict[str, Any],
    slot: str,
    key: str | None,
    event: tuple[str, str, str] | None,
    events: list[tuple[str, str, str]],
) -> None:
    """Record ``slot``'s verdict key in ``new`` and post ``event`` only when the key changed (one Event per change
    of verdict, keyed by kind and guard, never by a message with numbers in it). ``key`` None clears the slot."""
    if key is None:
        new.pop(slot, None)
        return
    new[slot] = key
    if old.get(slot) != key and event is not None:
        events.append(event)


def error_status(
    old: Mapping[str, Any], generation: int, now: float, reason: str, message: str, target: str | None
) -> dict[str, Any]:
    conditions = [dict(c) for c in old.get("conditions") or []]
    set_condition(conditions, "Ready", "False", reason, message, now, generation)
    status = {k: v for k, v in old.items() if k not in ("kopf",)}
    status.update(conditions=conditions, observedGeneration=generation, lastEvaluated=rfc3339(now))
    if target:
        status["targetName"] = target
    return status


def external_conditions(
    spec: PoolSpec,
    ext: Mapping[str, Any] | None,
    target_name: str,
    now: float,
    conditions: list[dict[str, Any]],
    gen: int,
) -> tuple[bool, str | None, str]:
    """Set ExternalWriter; returns (hold off now, verdict key, Event message)."""
    if ext is None:
        return False, None, ""
    recent = now < float(ext.get("until") or 0)
    what = f"Deployment {target_name} spec.replicas {ext.get('from')} -> {ext.get('to')} by {ext.get('writer')!r}"
    if not recent:
        set_condition(
            conditions, "ExternalWriter", "False", "NoRecentWriter", f"last: {what} at {ext.get('time')}", now, gen
        )
        return False, None, ""
    if ext.get("action") == "Reassert" or spec.external_scale.action == "Reassert":
        msg = f"{what}; reasserting the decision (spec.externalScale.action Reassert)"
        set_condition(conditions, "ExternalWriter", "True", "Reasserting", msg, now, gen)
        return False, f"{ext.get('writer')}:Reassert", msg
    msg = f"{what}; holding off until {ext.get('holdUntil')} (spec.externalScale)"
    set_condition(conditions, "ExternalWriter", "True", "HoldingOff", msg, now, gen)
    return True, f"{ext.get('writer')}:HoldOff", msg


@dataclass
class Facts:
    """One tick's inputs and verdict, from which the status (before and after a scale) is built."""

    body: Mapping[str, Any]
    spec: PoolSpec
    decision: Decision
    verdict_info: dict[str, Any] | None
    obs: Observation
    old: Mapping[str, Any]
    conditions: list[dict[str, Any]]
    ns: str
    name: str
    target_name: str
    gen: int
    now: float
    mode: str
    paused: str | None = None
    ext: dict[str, Any] | None = None
    verdicts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.verdicts = dict(self.old.get("verdicts") or {})
        self.verdicts.pop("ready", None)  # a tick that gets this far is Ready

    @property
    def outcome(self) -> str:
        d = self.decision
        return d.outcome if self.mode == "Active" else (self.mode if d.desired != d.current else d.outcome)

    def status(
        self, replicas: int, *, applied: bool, state: PoolState, events: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        d, now = self.decision, self.now
        self._conditions(replicas, events)
        status: dict[str, Any] = {
            "observedGeneration": self.gen,
            "targetName": self.target_name,
            "replicas": replicas,
            "desiredReplicas": d.desired,
            "recommendedReplicas": d.recommendation,
            "lastEvaluated": rfc3339(now),
            "consecutiveFailures": d.state.consecutive_failures,
            "signals": {**d.signals, "observedAt": rfc3339(now)},
            "lastDecision": self._last_decision(applied),
            "history": state.to_status(),
            "conditions": [dict(c) for c in self.conditions],
            "verdicts": dict(self.verdicts),
        }
        if self.ext is not None:
            status["externalWriter"] = self.ext
        if state.last_scale_time:
            status["lastScaleTime"] = rfc3339(state.last_scale_time)
        return status

    def _last_decision(self, applied: bool) -> dict[str, Any]:
        d = self.decision
        last = {
            "time": rfc3339(self.now),
            "from": d.current,
            "to": d.desired,
            "recommendation": d.recommendation,
            "outcome": self.outcome,
            "mode": self.mode,
            "applied": applied,
            "reason": d.reason,
            "limitedBy": d.limited_by,
            "inputs": d.signals,
            "sizing": d.sizing,
            "policy": self.verdict_info,
        }
        prev = self.old.get("lastDecision")
        if d.desired == d.current and prev and prev.get("from") != prev.get("to"):
            # Keep the last change visible: a quiet tick records its verdict in signals/conditions, not over it.
            return {**prev, "lastQuietTick": rfc3339(self.now), "quietReason": d.reason, "quietLimitedBy": d.limited_by}
        return last

    def _conditions(self, replicas: int, events: list[tuple[str, str, str]]) -> None:
        d, c, now, gen = self.decision, self.conditions, self.now, self.gen
        mode_note = f" ({self.mode})" if self.mode != "Active" else ""
        set_condition(c, "Ready", "True", "Reconciled", f"scaling Deployment {self.target_name}{mode_note}", now, gen)
        self._metrics_conditions(replicas, events)
        self._policy_condition(events)
        slo = {True: "True", False: "False", None: "Unknown"}[d.slo_met]
        why = {True: "WithinObjectives", False: "ObjectiveMissed", None: "NoData"}[d.slo_met]
        set_condition(c, "SLOMet", slo, why, d.slo_message, now, gen)
        if d.limited_by:
            limit = kind_of(d.limited_by[0]).value
            set_condition(c, "ScalingLimited", "True", limit, "; ".join(d.limited_by), now, gen)
        else:
            set_condition(c, "ScalingLimited", "False", "NotLimited", "the recommendation was applied as is", now, gen)
        set_condition(c, "Active", *activity(self.obs, d.metrics_ok), now, gen)
        if self.paused:
            set_condition(c, "Paused", "True", "Paused", self.paused, now, gen)
        else:
            set_condition(c, "Paused", "False", "NotPaused", f"mode {self.spec.mode}", now, gen)
        info = self.verdict_info
        if info and info.get("escalated"):
            set_condition(c, "Escalated", "True", "BacklogEscalation", "; ".join(info["reasons"]), now, gen)
        elif any(x.get("type") == "Escalated" for x in c):
            set_condition(c, "Escalated", "False", "NotEscalated", "", now, gen)

    def _metrics_conditions(self, replicas: int, events: list[tuple[str, str, str]]) -> None:
        """MetricsAvailable, Fallback, and one Event each when the signals break, the fallback takes over, or a
        broken signal holds the pool below what the model recommends."""
        d, c, now, gen, old_v = self.decision, self.conditions, self.now, self.gen, self.old.get("verdicts") or {}
        pool = f"WorkerPool {self.ns}/{self.name}"
        if d.metrics_ok:
            set_condition(c, "MetricsAvailable", "True", "SignalsRead", "backlog and arrival rate read", now, gen)
            for slot in ("metrics", "fallback", "belowModel"):
                self.verdicts.pop(slot, None)
        else:
            reason = "QueryFailed" if self.obs.error else "MetricsMissing"
            why = (
                brief_query_error(self.ns, self.name, self.obs.error)
                if self.obs.error
                else f"missing or stale: {', '.join(d.missing)}"
            )
            msg = (
                f"{why}; {d.state.consecutive_failures} consecutive failures "
                f"(fallback at {self.spec.fallback.failure_threshold})"
            )
            set_condition(c, "MetricsAvailable", "False", reason, msg, now, gen)
            verdict(
                old_v, self.verdicts, "metrics", reason, ("Warning", "MetricsUnavailable", f"{pool}: {why}"), events
            )
            below = d.recommendation > replicas
            note = (
                f"{pool} held at {replicas} while the model recommends {d.recommendation}: "
                f"{', '.join(d.missing) or 'signals'} unavailable"
            )
            verdict(
                old_v,
                self.verdicts,
                "belowModel",
                "BelowModel" if below else None,
                ("Warning", "HeldBelowModel", note),
                events,
            )
        fb = self.spec.fallback
        if d.outcome == "Fallback":
            msg = f"signals unavailable; fallback {fb.behavior} holds {d.desired} replicas"
            set_condition(c, "Fallback", "True", fb.behavior[0].upper() + fb.behavior[1:], msg, now, gen)
            verdict(
                old_v, self.verdicts, "fallback", fb.behavior, ("Warning", "FallbackActive", f"{pool}: {msg}"), events
            )
        else:
            set_condition(c, "Fallback", "False", "NotInForce", "the model's signals are in use", now, gen)
            self.verdicts.pop("fallback", None)

    def _policy_condition(self, events: list[tuple[str, str, str]]) -> None:
        info, c, now, gen, old_v = (
            self.verdict_info,
            self.conditions,
            self.now,
            self.gen,
            self.old.get("verdicts") or {},
        )
        if info is None:
            if not any(x.get("type") == "PolicyAllowed" for x in c):
                set_condition(c, "PolicyAllowed", "True", "NotEvaluated", "no change proposed yet", now, gen)
            return  # no change proposed: the last verdict stands (a guard that holds does not re-post)
        guards = ",".join(sorted(str(g) for g in info.get("limitedBy") or ())) or "-"
        reasons = "; ".join(info["reasons"]) or "allowed"
        if info.get("error") and info.get("source") == "failure-policy":
            err = brief(self.ns, self.name, str(info["error"]))
            set_condition(
                c, "PolicyAllowed", "False" if not info["allow"] else "True", "PolicyUnavailable", err, now, gen
            )
            event = ("Warning", "PolicyUnavailable", f"policy gate unavailable, failurePolicy applied: {err}")
            verdict(old_v, self.verdicts, "policy", "PolicyUnavailable", event, events)
        elif not info["allow"]:
            set_condition(c, "PolicyAllowed", "False", "Denied", reasons, now, gen)
            verdict(
                old_v,
                self.verdicts,
                "policy",
                f"Denied:{guards}",
                ("Warning", "PolicyBlocked", self.decision.reason),
                events,
            )
        elif info.get("replicas") is not None and info["replicas"] != info["proposed"]:
            set_condition(c, "PolicyAllowed", "True", "Clamped", reasons, now, gen)
            event = ("Warning", "PolicyClamped", self.decision.reason)
            verdict(old_v, self.verdicts, "policy", f"Clamped:{guards}", event, events)
        else:
            set_condition(c, "PolicyAllowed", "True", "Allowed", reasons, now, gen)
            self.verdicts.pop("policy", None)

    def labels(self) -> dict[str, str | None]:
        """Labels a policy asks for (e.g. chanscale.dev/escalated) go on the pool, so a priority class or an alert
        can select escalated pools; a label of ours that this tick's verdict does not ask for is removed."""
        wanted = {k: str(v) for k, v in ((self.verdict_info or {}).get("labels") or {}).items()}
        current = (self.body.get("metadata") or {}).get("labels") or {}
        stale: dict[str, str | None] = {k: None for k in current if k.startswith("chanscale.dev/") and k not in wanted}
        return {**stale, **{k: v for k, v in wanted.items() if current.get(k) != v}}


def explain_text(wp: dict[str, Any]) -> str:
    """A human answer to "why did it scale?" from a WorkerPool's status."""
    meta, spec, st = wp.get("metadata", {}), wp.get("spec", {}), wp.get("status") or {}
    d = st.get("lastDecision") or {}
    lines = [
        f"WorkerPool {meta.get('namespace')}/{meta.get('name')}  channel={spec.get('channel')}  "
        f"target={(spec.get('scaleTargetRef') or {}).get('kind') or 'Deployment'}/{st.get('targetName', '?')}  "
        f"mode={spec.get('mode', 'Active')}"
    ]
    if not d:
        lines.append("  no decision recorded yet")
    else:
        lines.append(
            f"Last decision at {d.get('time')}: {d.get('outcome')}  {d.get('from')} -> {d.get('to')} "
            f"(model recommended {d.get('recommendation')}, applied={d.get('applied')})"
        )
        lines.append(f"  why: {d.get('reason')}")
        if d.get("limitedBy"):
            lines.append("  limited by: " + "; ".join(d["limitedBy"]))
        sizing = d.get("sizing") or {}
        if sizing.get("terms"):
            terms = ", ".join(f"{k}={v}" for k, v in sizing["terms"].items())
            lines.append(
                f"  sizing: {terms}  (driver: {sizing.get('driver')}, "
                f"λ={sizing.get('arrivalRate')}/s, μ={sizing.get('serviceRate')}/s per worker)"
            )
        inputs = d.get("inputs") or {}
        if inputs:
            lines.append("  inputs: " + ", ".join(f"{k}={v}" for k, v in inputs.items()))
        pol = d.get("policy")
        if pol:
            verdict = "allowed" if pol.get("allow") else "denied"
            if pol.get("replicas") is not None and pol.get("replicas") != pol.get("proposed"):
                verdict = f"clamped to {pol['replicas']}"
            lines.append(f"  policy {pol.get('path')}: {verdict} ({pol.get('source')})")
            for r in pol.get("reasons") or []:
                lines.append(f"    - {r}")
        if d.get("lastQuietTick"):
            lines.append(f"  since then (last tick {d['lastQuietTick']}): {d.get('quietReason')}")
    for c in st.get("conditions") or []:
        lines.append(f"  {c.get('type'):<17}{c.get('status'):<8}{c.get('reason', ''):<22}{c.get('message', '')}")
    return "\n".join(lines)
