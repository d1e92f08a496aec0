"""kopf handlers: thin wrappers that feed :func:`chanscale.reconcile.tick`.

- Deployments and HPAs are *indexed* in memory (kopf indexes), so a tick reads a pool's target and any
  competing autoscaler without an API request; only real scale changes write.
- One operator-wide ticker (:mod:`chanscale.ticker`) evaluates every pool of the pool index once per
  ``--tick`` at a stable phase; a pool's ``pollingInterval`` is honoured on top. The fast path
  (:mod:`chanscale.fastpath`) evaluates a pool at once when its backlog or arrivals move. With leader election
  or shards (:mod:`chanscale.leader`) only the pools whose Lease this replica holds are evaluated.
  ``--scheduler timers`` keeps the former kopf timer per pool, for comparison.
- Status is written by :mod:`chanscale.reconcile` itself (merge patch of ``/status``), never through kopf's
  ``patch`` object: kopf retries a timer's failed patch for ~55 s and then the error ends that pool's timer for
  good (kopf ``_timer``/``_runner``). Evaluations never raise and leave kopf nothing to patch, so no API
  outage, however long, can stop a pool's evaluation. Writes happen only on material change (or every
  ``status_refresh`` seconds for the observations), so 1 000 quiet pools do not flood the API server.
- Liveness and readiness are served by :mod:`chanscale.health` (``/healthz``, ``/readyz``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from . import GROUP, PLURAL, VERSION, kopf_toggles, kube, telemetry, tenancy
from .direct import LABEL_SELECTOR, DirectPath, pod_entry
from .fastpath import FastPath
from .health import Health, api_server_answers
from .leader import Elector
from .reconcile import Config, Runtime, Target, tick
from .scaletarget import ScaleSubresource
from .signals import PrometheusReader
from .spec import PoolSpec, SpecError
from .ticker import BY_KEY, BY_NAMESPACE, BY_TARGET, PoolListing, Ticker, first_body, pool_views, slim_body

log = logging.getLogger("chanscale")

#: Threads for blocking API and Prometheus requests; the ticker runs at most TICK_CONCURRENCY pools at once.
EXECUTOR_THREADS = 16
TICK_CONCURRENCY = 64
#: Seconds the pools' bodies, read from the index, serve the fast path's poll (PoolListing.bodies; the ticker needs
#: only the keys).
BODIES_TTL = 0.5

#: The one kopf index of WorkerPools (:func:`chanscale.ticker.pool_views`).
POOL_INDEX = "pool_index"
#: The collector's thresholds (CPython's are 700, 10, 10). Every watch event leaves a new body that lives until the
#: next one, so thousands of objects a second survive the young passes and trigger full passes, stops of the whole
#: process (8-10 of up to 0.3 s in 2.5 minutes at 300 pools with the defaults). And every event's body is freed by
#: the young passes, not by reference counting: kopf's Body and Patch refer to their views and back (a cycle per
#: event; CHANSCALE_GCTYPES), so a young pass frees all the bodies since the last one, and its pause grows with
#: its threshold. Measured at 1 000 pools (bench.at_scale --gclog; bench/RESULTS.md section 6): (700, 10, 100) made
#: 7 513 / 682 / 7 passes costing 10.6 / 6.4 / 2.2 s in ~5 minutes; (20 000, 10, 100) 161 / 14 / 1 costing
#: 5.3 / 1.1 / 0.05 s, young pauses up to 128 ms (p99 100 ms); (5 000, 40, 100) — a middle young threshold, the same
#: gen-1 period (200 000 allocations) — 456 / 16 / 1 costing 2.4 / 0.5 / 0.03 s in ~4 minutes, young pauses up to
#: 55 ms (p99 38 ms).
GC_THRESHOLDS = (5_000, 40, 100)


class SlimDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base (the "essence" it compares to detect changes), built without copying what it drops.

    kopf builds an essence for every watch event of every watched resource: a deep copy of the whole body, from
    which it then deletes ``status`` and all of ``metadata`` but labels and annotations. For a WorkerPool that is
    its status history and managedFields, copied and dropped on each of its status writes (5 % of the operator's
    CPU at 1 000 pools). The same essence is built from a body without them; the result is identical.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        fields = [f if isinstance(f, str) else ".".join(f) for f in extra_fields or ()]
        raw = {k: v for k, v in body.items() if k != "status" or any(f.startswith("status") for f in fields)}
        if not any(f.startswith("metadata") for f in fields):
            meta = body.get("metadata") or {}
            raw["metadata"] = {k: meta[k] for k in ("labels", "annotations", "ownerReferences") if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, raw)), extra_fields=fields)


def _deployment_key(namespace: str, name: str) -> tuple[str, str]:
    return (namespace, name)


def _pool_entry(name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: Mapping[str, Any]) -> Any:
    return tenancy.pool_index_entry(name, spec, status, str(meta.get("creationTimestamp") or ""))


def _conflict(
    namespace: str,
    pool: str,
    name: str,
    hpas: Mapping[Any, Any],
    scaledobjects: Mapping[Any, Any],
    pools: list[Any],
    kind: str = "Deployment",
) -> str | None:
    """Another autoscaler on the target: a KEDA ScaledObject (paused ones too), an HPA, or an older WorkerPool."""
    owner = tenancy.target_owner(pools, name if kind == "Deployment" else f"{kind}/{name}")
    if owner is not None and owner != pool:
        return f"WorkerPool {owner} (the oldest Active pool naming this {kind})"
    scaled = sorted(scaledobjects.get((namespace, kind, name), ()))
    if scaled:
        so, paused = scaled[0]
        return f"KEDA ScaledObject {so}" + (f" (paused, but it still owns the {kind})" if paused else "")
    conflicts = sorted(hpas.get((namespace, kind, name), ()))
    return f"HorizontalPodAutoscaler {conflicts[0]}" if conflicts else None


def target_from_indexes(
    namespace: str,
    name: str,
    deployments: Mapping[Any, Any],
    hpas: Mapping[Any, Any],
    scaledobjects: Mapping[Any, Any] | None = None,
    workerpools: Mapping[Any, Any] | None = None,
    pool: str = "",
    claims: Mapping[Any, Any] | None = None,
) -> Target:
    """The target Deployment as kopf's indexes see it. ``claims`` (the pool index by namespace and target,
    :func:`chanscale.ticker.pool_views`) spares a scan of the namespace's pools per tick; without it the pools by
    namespace (``workerpools``) are scanned."""
    pools = workerpools if workerpools is not None else {}
    claimants = list(claims.get((namespace, name), ()) if claims is not None else pools.get(namespace, ()))
    conflict = _conflict(namespace, pool, name, hpas, scaledobjects or {}, claimants)

    def peers() -> tuple[list[dict[str, Any]], dict[str, int]]:
        members = list(pools.get(namespace, ()))  # the index's own entries: read, never changed
        replicas: dict[str, int] = {}
        for p in members:  # one policy call at 1 000 pools: 1 000 lookups, no copies
            for e in deployments.get(_deployment_key(namespace, p["target"]), ()):
                replicas[p["target"]] = e["replicas"]
                break
        return members, replicas

    entries = list(deployments.get(_deployment_key(namespace, name), ()))
    if not entries:
        return Target(name=name, exists=False, conflict=conflict, peers=peers)
    d = entries[0]
    return Target(
        name=name,
        exists=True,
        replicas=d["replicas"],
        ready=d["ready"],
        conflict=conflict,
        peers=peers,
        manager=d.get("manager"),
    )


async def target_from_scale(
    rt: Runtime,
    namespace: str,
    pool: str,
    spec: Mapping[str, Any],
    hpas: Mapping[Any, Any],
    scaledobjects: Mapping[Any, Any],
    workerpools: Mapping[Any, Any],
    claims: Mapping[Any, Any] | None = None,
) -> Target | None:
    """A target other than a Deployment, read through its /scale subresource (one GET per tick), or None when
    the pool's spec or the admin's guardrails stop it before any request (the tick reports why)."""
    try:
        ps = PoolSpec.from_dict(spec)
    except SpecError:
        return None
    if not rt.config.guardrails.allows_scale_kind(ps):
        return None
    name = ps.target_name(pool)
    key = (namespace, f"{ps.scale_kind}/{name}")
    claimants = list(claims.get(key, ()) if claims is not None else workerpools.get(namespace, ()))
    conflict = _conflict(namespace, pool, name, hpas, scaledobjects, claimants, ps.scale_kind)
    reading = await rt.scale_any.read(namespace, ps.scale_api_version, ps.scale_kind, name)
    if reading is None:
        return Target(name=name, exists=False, conflict=conflict)
    return Target(name=name, exists=True, replicas=reading.replicas, ready=reading.observed, conflict=conflict)


async def evaluate(rt: Runtime, body: Mapping[str, Any], indexes: Mapping[str, Any], force: bool = False) -> None:
    """One pool's tick with its target seen through kopf's indexes; posts the tick's Events. Never raises: status,
    labels and the scale are written by :func:`chanscale.reconcile.tick`, which turns every fault into a condition."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    target_name = (spec.get("template") and name) or (spec.get("scaleTargetRef") or {}).get("name") or name
    target = await _target(rt, namespace, name, target_name, spec, indexes)
    result = await tick(rt, body, target, force=force)
    for etype, reason, message in result.events:
        kopf.event(cast(kopf.Body, body), type=etype, reason=reason, message=message[:1024])


async def _target(
    rt: Runtime, namespace: str, name: str, target_name: str, spec: Mapping[str, Any], indexes: Mapping[str, Any]
) -> Target | None:
    """A Deployment (or a template pool's own) from kopf's indexes; any other kind through its /scale subresource."""
    hpas, scaledobjects, workerpools = indexes["hpas"], indexes["scaledobjects"], indexes["workerpools"]
    if (spec.get("scaleTargetRef") or {}).get("kind") in (None, "Deployment") or spec.get("template"):
        return target_from_indexes(
            namespace,
            target_name,
            indexes["deployments"],
            hpas,
            scaledobjects,
            workerpools,
            name,
            indexes.get("claims"),
        )
    try:
        return await target_from_scale(
            rt, namespace, name, spec, hpas, scaledobjects, workerpools, indexes.get("claims")
        )
    except kube.ScaleError as e:  # discovery or RBAC: the pool reports it, others carry on
        return Target(name=target_name, exists=False, error=f"{e.reason}: {e}")


@dataclass(frozen=True)
class DirectSettings:
    """The opt-in direct path (chanscale.direct): seconds between readings of a pool, seconds per pod request."""

    period: float = 2.0
    timeout: float = 0.5


def start_ticker(
    memo: kopf.Memo,
    config: Config,
    indexes: Mapping[str, Any],
    fast_period: float,
    direct_settings: DirectSettings | None = None,
) -> None:
    """One task evaluates every pool (see :mod:`chanscale.ticker`), and, with ``fast_period``, another polls the
    cheap signals and evaluates a pool at once when they move (:mod:`chanscale.fastpath`). Called from the first
    WorkerPool event: kopf runs no event handler before its indexes are filled, and the tasks inherit the
    handler's context, where kopf's Event poster lives (``kopf.event`` needs it)."""
    indexes = {**indexes, **pool_views(indexes[POOL_INDEX])}
    pools = indexes["pools"]
    owns = getattr(memo, "owns", None)
    rt: Runtime = memo.runtime
    gc.freeze()  # see configure(): the first listing of every watched resource is in memory now

    # The pools this replica evaluates, kept between changes of membership (the `known` handler notes them) and of
    # the shards it holds; the ticker's resync and the fast path's poll (both every second) share one listing.
    listing = PoolListing(pools, owns, getattr(memo, "ownership", lambda: None), ttl=BODIES_TTL)
    memo.scheduler["listing"] = listing

    async def run_one(key: tuple[str, str], forced: bool) -> None:
        if owns is not None and not owns(key):
            return  # lost the shard since the step began: the new owner evaluates it
        body = first_body(pools.get(key))
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return  # gone or being deleted since the ticker last read the pools
        if fast is not None:
            fast.note(key)
        await evaluate(rt, body, indexes, force=forced)

    ticker = Ticker(
        interval=config.tick,
        keys=listing.current,
        run_one=run_one,
        concurrency=TICK_CONCURRENCY,
        on_lag=telemetry.LOOP_LAG_SECONDS.observe,
    )
    fast = None
    if fast_period > 0 and config.prometheus_url:
        fast = FastPath(
            rt.reader,
            config.prometheus_url,
            pools=lambda: [(k, b.get("spec") or {}) for k, b in listing.bodies()],
            trigger=ticker.trigger,
            period=fast_period,
        )
        if direct_settings is not None:
            pods: kopf.Index[Any, Any] = indexes["directpods"]
            fast.direct = rt.direct = DirectPath(
                pods=lambda ns, deployment: list(pods.get((ns, deployment)) or ()),
                period=direct_settings.period,
                timeout=direct_settings.timeout,
            )
        memo.scheduler["fast"] = asyncio.create_task(fast.run(), name="chanscale-fast-path")
    memo.scheduler["ticker"] = ticker
    memo.scheduler["task"] = asyncio.create_task(ticker.run(), name="chanscale-ticker")


def _direct_pod(body: kopf.Body, **_: Any) -> bool:
    return pod_entry(body) is not None


def _template_here(spec: Mapping[str, Any], namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> bool:
    """A template pool this replica owns (all of them without leader election)."""
    owns = getattr(memo, "owns", None)
    return bool(spec.get("template")) and (owns is None or owns((namespace or "", name)))


def start_election(memo: kopf.Memo, elector: Elector) -> None:
    """Evaluate only the pools whose shard Lease this replica holds (chanscale.leader)."""
    health: Health = memo.health

    def changed(shards: set[int]) -> None:
        health.owned_since = health.clock()
        telemetry.SHARDS_HELD.set(len(shards))
        log.info("shards held: %s", sorted(shards) or "none (standby)")

    elector.on_change = changed
    memo.owns = health.owns = elector.owns
    memo.ownership = lambda: frozenset(elector.active_shards())  # a change makes the ticker list its pools again
    memo.elector_task = asyncio.create_task(elector.run(), name="chanscale-leader-election")


def fix_startup_wait(logger: Any) -> None:
    """Make kopf's wait for its indexes linear in the objects watched (chanscale.kopf_toggles). Runs in the startup
    handler: kopf makes the set it waits with when its orchestrator starts, after the startup handlers. On a kopf the
    patch was not verified against, kopf's own set stays (correct, with the quadratic start-up): a speed-up is no
    reason to refuse to run, so the operator starts and says what to do."""
    try:
        if not kopf_toggles.install():
            logger.warning(
                "kopf's own ToggleSet kept (%s=kopf): start-up is quadratic in the objects watched", kopf_toggles.ENV
            )
    except kopf_toggles.KopfInternalsChanged as e:
        logger.warning("kopf's own ToggleSet kept, start-up is quadratic in the objects watched: %s", e)


def build_registry(
    config: Config,
    scheduler: str = "ticker",
    elector: Elector | None = None,
    fast_period: float = 1.0,
    direct_settings: DirectSettings | None = None,
) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry with the configured tick. ``scheduler``: ``ticker`` (one
    operator-wide task over the ``pools`` index) or ``timers`` (a kopf timer per pool, the former design).
    ``elector``: evaluate only the pools whose shard Lease this replica holds (None: all pools).
    ``fast_period``: seconds between polls of the cheap signals (chanscale.fastpath; 0 disables; ticker only).
    ``direct_settings``: enable the direct path (chanscale.direct) and its index of labelled pods."""
    registry = kopf.OperatorRegistry()
    _register_lifecycle(registry, config, elector, direct_settings)
    _register_indexes(registry, direct_settings)
    _register_pool_handlers(registry, config, scheduler, fast_period, direct_settings)
    return registry


def _apply_settings(settings: kopf.OperatorSettings, direct_settings: DirectSettings | None) -> None:
    """kopf's settings, and the loop's executor for our blocking clients."""
    # Timeouts so a silently dropped watch is re-established (kopf #698).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = SlimDiffBase(prefix=GROUP)
    settings.posting.level = logging.WARNING  # our own Events are explicit; warnings from kopf still post
    settings.execution.max_workers = 8
    if direct_settings is not None:  # only the labelled pods reach us (server-side selector), and only then
        settings.watching.label_selectors["", "v1", "pods"] = LABEL_SELECTOR
    # Our blocking clients (kubernetes, prometheus-api-client) run in the loop's default executor: with 1 000
    # pools its default of cpu+4 threads queued status writes behind each other (docs/scaling.md). Writes through
    # aiohttp on the loop were measured and not kept: no less CPU per write (aiohttp's request handling and
    # asyncio's TLS are Python too), and the work moved onto the loop (bench/RESULTS.md, section 6).
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="chanscale-io")
    )


def _make_runtime(config: Config) -> Runtime:
    """The operator's state and its I/O adapters (Prometheus, the policy gate, the Kubernetes writers)."""
    from .peerlist import make_probe
    from .policy import make_gate

    gate = make_gate(config.opa)
    return Runtime(
        config=config,
        reader=PrometheusReader(
            config.prometheus_url,
            ttl=max(1.0, config.tick * 0.8),
            timeout=config.query_timeout,
            on_query=telemetry.observe_query,
            auth=config.prometheus_auth,
            allowed=tenancy.allowed_addresses(config.guardrails, config.prometheus_url),
        ),
        gate=gate,
        peer_list=make_probe(config.policy_peers, gate),
        scaler=kube.KubeScaler(),
        scale_any=ScaleSubresource(),
        writer=kube.KubeStatusWriter(),
    )


async def _start_gate(gate: Any, logger: Any) -> None:
    """Start a supervised local OPA now, so the first decision does not pay for it; failing here is not fatal
    (the gate retries with back-off and each pool's failurePolicy applies meanwhile)."""
    from .policy import PolicyUnavailable

    start = getattr(gate, "start", None)
    if start is not None:
        try:
            await start()
        except PolicyUnavailable as e:
            logger.warning("policy gate not available yet: %s", e)


def _register_lifecycle(
    registry: kopf.OperatorRegistry, config: Config, elector: Elector | None, direct_settings: DirectSettings | None
) -> None:
    """Start-up (settings, the runtime, health, the gate, the election), login and clean-up."""

    @kopf.on.startup(id="configure", registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
        fix_startup_wait(logger)
        _apply_settings(settings, direct_settings)
        memo.runtime = _make_runtime(config)
        memo.runtime.writer = kube.SessionStatusWriter(settings)  # kopf's session, from the ticker's context
        health = memo.health = Health(
            tick=config.tick,
            stale_intervals=config.stale_intervals,
            api_check=api_server_answers,
            gate=memo.runtime.gate,
            evaluated=memo.runtime.evaluated,
        )
        if config.health_url:
            memo.health_runner = await health.serve(config.health_url)
        memo.watchdog = asyncio.create_task(health.watchdog(), name="chanscale-health-watchdog")
        logger.info(
            "chanscale configured: tick=%ss prometheus=%s (auth: %s) opa=%s",
            config.tick,
            config.prometheus_url,
            config.prometheus_auth.describe(),
            config.opa,
        )
        await _start_gate(memo.runtime.gate, logger)
        # kopf gives each object a shallow copy of the memo: state the first event handler sets must live in a
        # shared container, or every pool would start (and drop) a ticker of its own.
        memo.scheduler = {"task": None}
        # Everything loaded so far (modules, classes, the clients) lives as long as the process: freeze it out of
        # the collector's full passes, which otherwise stop the event loop for 0.1-0.3 s at a few hundred pools
        # (bench.at_scale --gclog); and collect far less often (GC_THRESHOLDS).
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if elector is not None:
            start_election(memo, elector)
        health.started = True

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """A fresh registry has none of kopf's default login handlers: log in the way the official client does
        (in-cluster service account, else the kubeconfig)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(id="shutdown", registry=registry)
    async def shutdown(memo: kopf.Memo, **_: Any) -> None:
        await _shutdown(memo)


async def _shutdown(memo: kopf.Memo) -> None:
    """Stop the ticker and the fast path, release the Leases, stop health, close the gate and the direct path."""
    for task in (getattr(memo, "scheduler", {}).get(k) for k in ("task", "fast")):
        if task is not None:
            task.cancel()
    election = getattr(memo, "elector_task", None)
    if election is not None:  # cancelling releases the Leases: a standby takes over at its next round
        election.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await election
    watchdog = getattr(memo, "watchdog", None)
    if watchdog is not None:
        watchdog.cancel()
    runner = getattr(memo, "health_runner", None)
    if runner is not None:
        await runner.cleanup()
    rt = getattr(memo, "runtime", None)
    if rt is not None:
        await rt.gate.close()
        if rt.direct is not None:
            await rt.direct.close()


def _register_indexes(registry: kopf.OperatorRegistry, direct_settings: DirectSettings | None) -> None:
    """The in-memory views every cross-object read uses: targets, competing autoscalers, pools, direct pods."""

    @kopf.index("apps", "v1", "deployments", id="deployments", registry=registry)
    async def deployments(
        namespace: str | None,
        name: str,
        meta: Mapping[str, Any],
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        **_: Any,
    ) -> Any:
        replicas = spec.get("replicas")
        return {
            _deployment_key(namespace or "", name): {
                "replicas": 1 if replicas is None else int(replicas),
                "ready": int(status.get("readyReplicas") or 0),
                "manager": kube.replicas_manager(meta.get("managedFields")),
            }
        }

    @kopf.index("autoscaling", "v2", "horizontalpodautoscalers", id="hpas", registry=registry)
    async def hpas(namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any) -> Any:
        ref = spec.get("scaleTargetRef") or {}
        return {(namespace or "", ref.get("kind", ""), ref.get("name", "")): name}

    @kopf.index("keda.sh", "v1alpha1", "scaledobjects", id="scaledobjects", registry=registry)
    async def scaledobjects(
        namespace: str | None, name: str, spec: Mapping[str, Any], meta: kopf.Meta, **_: Any
    ) -> Any:
        """KEDA ScaledObjects by target, paused ones included (a paused ScaledObject still owns its target)."""
        ref = spec.get("scaleTargetRef") or {}
        paused = any(k.startswith("autoscaling.keda.sh/paused") for k in (meta.get("annotations") or {}))
        return {(namespace or "", ref.get("kind") or "Deployment", ref.get("name", "")): (name, paused)}

    _register_pool_indexes(registry)
    if direct_settings is not None:

        @kopf.index("", "v1", "pods", id="directpods", when=_direct_pod, registry=registry)
        async def directpods(body: kopf.Body, **_: Any) -> Any:
            """Ready, labelled pods with a declared metrics port, by (namespace, owning Deployment): what the direct
            path may read (chanscale.direct.pod_entry). A pod that stops qualifying leaves the index."""
            entry = pod_entry(body)
            return None if entry is None else {entry[0]: entry[1]}


def _register_pool_indexes(registry: kopf.OperatorRegistry) -> None:
    """WorkerPools three ways in one index (:func:`pool_views` splits it): by target (claims), by namespace
    (budgets), by key (the ticker)."""

    @kopf.index(GROUP, VERSION, PLURAL, id=POOL_INDEX, registry=registry)
    async def pool_index(
        body: kopf.Body,
        namespace: str | None,
        name: str,
        spec: Mapping[str, Any],
        status: Mapping[str, Any],
        meta: kopf.Meta,
        **_: Any,
    ) -> Any:
        """Every WorkerPool by namespace, from the first tick on: for budgets and for one pool per Deployment; by
        (namespace, target): who else names a pool's target, without scanning the namespace (a scan per pool per tick
        is quadratic in the namespace's pools); by key, as the tick reads it (:func:`chanscale.ticker.slim_body`).

        One handler, not three: kopf runs its handler machinery (outcomes, progress, kwargs) per handler for every
        watch event, and at 1 000 pools every status write comes back as one."""
        ns = namespace or ""
        entry = _pool_entry(name, spec, status, meta)
        return {
            (BY_NAMESPACE, ns): entry,
            (BY_TARGET, (ns, entry["target"])): entry,
            (BY_KEY, (ns, name)): slim_body(body),
        }


def _register_pool_handlers(
    registry: kopf.OperatorRegistry,
    config: Config,
    scheduler: str,
    fast_period: float,
    direct_settings: DirectSettings | None,
) -> None:
    """Per-pool handlers: liveness bookkeeping (and the ticker's start), spec.template, the former timers."""

    @kopf.on.event(GROUP, VERSION, PLURAL, id="known", registry=registry)
    async def known(
        event: Mapping[str, Any], meta: kopf.Meta, namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any
    ) -> None:
        """Every pool kopf sees must keep being evaluated: liveness checks each against its last tick (a pool being
        deleted no longer is). A deleted pool's in-memory state is dropped. The first event starts the ticker."""
        if scheduler == "ticker" and getattr(memo, "scheduler", {"task": 0})["task"] is None:
            start_ticker(memo, config, kwargs, fast_period, direct_settings)
        key = (namespace or "", name)
        health: Health | None = getattr(memo, "health", None)
        gone = event.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
        if health is not None:
            (health.gone if gone else health.seen)(key)
        listing: PoolListing | None = getattr(memo, "scheduler", {}).get("listing")
        if listing is not None:
            listing.note(key, gone)
        rt: Runtime | None = getattr(memo, "runtime", None)
        if rt is not None and event.get("type") == "DELETED":
            rt.forget(*key)

    # Only template pools have change-detecting handlers: kopf then stores its last-handled-configuration
    # annotation (a copy of the spec) and a finalizer on those alone, not on every pool.
    @kopf.on.resume(
        GROUP, VERSION, PLURAL, field="spec.template", when=_template_here, id="template", registry=registry
    )
    @kopf.on.create(
        GROUP, VERSION, PLURAL, field="spec.template", when=_template_here, id="template", registry=registry
    )
    @kopf.on.update(
        GROUP, VERSION, PLURAL, field="spec.template", when=_template_here, id="template", registry=registry
    )
    async def ensure_template(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await _ensure_template(body, spec, memo.runtime, logger)

    if scheduler == "timers":  # the former design, kept to measure against (bench.at_scale --scheduler timers)

        @kopf.timer(GROUP, VERSION, PLURAL, id="reconcile", interval=config.tick, sharp=False, registry=registry)
        async def reconcile(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
            """Never raises and leaves kopf's patch empty (see the module docstring)."""
            owns = getattr(memo, "owns", None)
            if owns is None or owns((body["metadata"].get("namespace") or "", body["metadata"]["name"])):
                await evaluate(memo.runtime, body, {**kwargs, **pool_views(kwargs[POOL_INDEX])})


async def _ensure_template(body: kopf.Body, spec: kopf.Spec, rt: Runtime, logger: Any) -> None:
    """A pool with spec.template owns a Deployment named after it (garbage-collected with the pool)."""
    if not spec.get("template"):
        return
    try:
        ps = PoolSpec.from_dict(spec)
    except SpecError as e:
        raise kopf.PermanentError(f"invalid spec: {e}") from e
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if not rt.config.guardrails.allows_templates(key[0]):
        return  # the tick reports TemplatesDisabled on the pool's conditions
    try:
        what = await kube.ensure_template_deployment(body, ps.template or {}, max(ps.min_replicas, 0))
    except kube.ScaleError as e:
        kopf.warn(body, reason=e.reason, message=str(e))
        raise kopf.PermanentError(str(e)) from e
    except kube.TemplateRejected as e:
        # The API server refused it: retrying cannot help until spec.template changes (this handler is
        # called again then). The tick reports it: Ready=False/TemplateRejected and one Event.
        rt.tenancy.template_errors[key] = (kube.template_digest(ps.template or {}), str(e))
        logger.warning("Deployment from spec.template refused: %s", e)
        return
    except Exception as e:
        raise kopf.TemporaryError(f"could not create or update the Deployment: {e}", delay=15) from e
    rt.tenancy.template_errors.pop(key, None)
    logger.info("Deployment %s %s from spec.template", body["metadata"]["name"], what)
