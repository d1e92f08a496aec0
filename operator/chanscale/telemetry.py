"""The operator's own Prometheus metrics (prometheus-client), served on ``--metrics-port``."""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server

# No ``<name>_created`` series beside every counter and histogram: a creation timestamp per pool and outcome that
# no dashboard or alert reads, and half the samples of a scrape. Rendering /metrics holds the GIL, so the event
# loop waits for it (at 1 000 pools a scrape of the per-pool series rendered thousands of them).
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

_LAT = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

DECISIONS = Counter(
    "chanscale_decisions_total",
    "Decisions made, by outcome (ScaleUp, ScaleDown, NoChange, Hold, Fallback, Blocked, DryRun, Paused, Error).",
    ["namespace", "pool", "outcome"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "chanscale_decision_duration_seconds",
    "Wall time of one pool's tick: signals, decision, policy gate, scale write and status write.",
    buckets=_LAT,
    registry=REGISTRY,
)
VERDICT_SECONDS = Histogram(
    "chanscale_verdict_duration_seconds",
    "Wall time from the start of one pool's tick to its gated verdict: signals, decision and policy gate (when a "
    "change is proposed), before any write.",
    buckets=_LAT,
    registry=REGISTRY,
)
LOOP_LAG_SECONDS = Histogram(
    "chanscale_event_loop_lag_seconds",
    "How late the ticker's steps (every 0.1 s) wake up: time the event loop was busy with other work (or the process "
    "was not scheduled). Every evaluation's latency includes it.",
    buckets=_LAT,
    registry=REGISTRY,
)
POLICY_SECONDS = Histogram(
    "chanscale_policy_duration_seconds",
    "Latency of one policy-gate evaluation.",
    buckets=_LAT,
    registry=REGISTRY,
)
SHARDS_HELD = Gauge(
    "chanscale_shards_held",
    "Shards whose Lease this replica holds (1 on the leader, 0 on a standby; chanscale.leader).",
    registry=REGISTRY,
)
QUERY_SECONDS = Histogram(
    "chanscale_prometheus_query_duration_seconds",
    "Latency of one Prometheus instant query.",
    ["result"],
    buckets=_LAT,
    registry=REGISTRY,
)
QUERIES = Counter(
    "chanscale_prometheus_queries_total",
    "Prometheus queries sent (cache misses).",
    ["result"],
    registry=REGISTRY,
)
KUBE_REQUESTS = Counter(
    "chanscale_kubernetes_requests_total",
    "Kubernetes API requests chanscale itself makes (kopf's watches and status patches excluded).",
    ["verb", "resource"],
    registry=REGISTRY,
)
DIRECT_READINGS = Counter(
    "chanscale_direct_readings_total",
    "Direct-path readings of a pool's pods (chanscale.direct), by reason: DirectRead, or why it fell back.",
    ["reason"],
    registry=REGISTRY,
)
DIRECT_REQUESTS = Counter(
    "chanscale_direct_pod_requests_total",
    "GET /metrics requests sent to worker pods by the direct path (its cost: sampled pods per reading).",
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "chanscale_status_writes_total",
    "WorkerPool status patches requested.",
    ["namespace", "pool"],
    registry=REGISTRY,
)
SCALES = Counter(
    "chanscale_scale_total", "Replica changes applied.", ["namespace", "pool", "direction"], registry=REGISTRY
)
REPLICAS = Gauge("chanscale_pool_replicas", "Current replicas of the target.", ["namespace", "pool"], registry=REGISTRY)
DESIRED = Gauge(
    "chanscale_pool_desired_replicas",
    "Replicas after behaviour and policy.",
    ["namespace", "pool"],
    registry=REGISTRY,
)
RECOMMENDED = Gauge(
    "chanscale_pool_recommended_replicas",
    "The model's raw recommendation.",
    ["namespace", "pool"],
    registry=REGISTRY,
)
SLO_MET = Gauge(
    "chanscale_pool_slo_met",
    "1 when the pool meets its SLO, 0 when not, -1 unknown.",
    ["namespace", "pool"],
    registry=REGISTRY,
)
METRICS_AVAILABLE = Gauge(
    "chanscale_pool_metrics_available",
    "1 when the pool's required signals were read.",
    ["namespace", "pool"],
    registry=REGISTRY,
)

PER_POOL = (REPLICAS, DESIRED, RECOMMENDED, SLO_MET, METRICS_AVAILABLE)


def exported_names() -> set[str]:
    """Every series name the operator's /metrics can carry (dashboards and alert rules are checked against it)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {f.name + s for f in REGISTRY.collect() for s in suffixes.get(f.type, ("",))}


def observe_query(_address: str, seconds: float, ok: bool) -> None:
    result = "success" if ok else "error"
    QUERIES.labels(result).inc()
    QUERY_SECONDS.labels(result).observe(seconds)


#: Each pool's labelled children, looked up once (``labels()`` takes a lock and builds its key on every call; a tick
#: publishes six of them).
_CHILDREN: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered until :func:`forget_pool`."""
    key = (id(metric), *labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


_PUBLISHED: dict[tuple[str, str], tuple[float, ...]] = {}


def publish_pool(namespace: str, pool: str, values: tuple[float, ...]) -> None:
    """Set a pool's :data:`PER_POOL` gauges to ``values`` (in that order); nothing to do when they are what the
    pool's last evaluation published, as for nearly every quiet pool (five locked sets per evaluation otherwise)."""
    key = (namespace, pool)
    if _PUBLISHED.get(key) == values:
        return
    for gauge, value in zip(PER_POOL, values, strict=True):
        child(gauge, namespace, pool).set(value)
    _PUBLISHED[key] = values


def forget_pool(namespace: str, pool: str) -> None:
    """Drop a deleted pool's gauges so they do not linger as stale series."""
    _PUBLISHED.pop((namespace, pool), None)
    for key in [k for k in _CHILDREN if k[1:3] == (namespace, pool)]:
        del _CHILDREN[key]
    for g in PER_POOL:
        with contextlib.suppress(KeyError):
            g.remove(namespace, pool)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=addr, registry=REGISTRY)
