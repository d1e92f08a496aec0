"""kopf handlers: thin wrappers that feed :func:`chanscale.reconcile.tick`.

- Deployments and HPAs are *indexed* in memory (kopf indexes), so a tick reads a pool's target and any
  competing autoscaler without an API request; only real scale changes write.
- A timer per WorkerPool fires every ``--tick`` seconds; a pool's ``pollingInterval`` is honoured on top.
- Status is written by :mod:`chanscale.reconcile` itself (merge patch of ``/status``), never through kopf's
  ``patch`` object: kopf retries a timer's failed patch for ~55 s and then the error ends that pool's timer for
  good (kopf ``_timer``/``_runner``). The timer handler never raises and leaves kopf nothing to patch, so no API
  outage, however long, can stop a pool's evaluation. Writes happen only on material change (or every
  ``status_refresh`` seconds for the observations), so 1 000 quiet pools do not flood the API server.
- Liveness and readiness are served by :mod:`chanscale.health` (``/healthz``, ``/readyz``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from . import GROUP, PLURAL, VERSION, kube, telemetry, tenancy
from .health import Health, api_server_answers
from .reconcile import Config, Runtime, Target, tick
from .scaletarget import ScaleSubresource
from .signals import PrometheusReader
from .spec import PoolSpec, SpecError

log = logging.getLogger("chanscale")


def _deployment_key(namespace: str, name: str) -> tuple[str, str]:
    return (namespace, name)


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
) -> Target:
    pools = workerpools if workerpools is not None else {}
    conflict = _conflict(namespace, pool, name, hpas, scaledobjects or {}, list(pools.get(namespace, ())))

    def peers() -> tuple[list[dict[str, Any]], dict[str, int]]:
        members = [dict(p) for p in pools.get(namespace, ())]
        return members, {
            p["target"]: e["replicas"]
            for p in members
            for e in list(deployments.get(_deployment_key(namespace, p["target"]), ()))[:1]
        }

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
    conflict = _conflict(
        namespace, pool, name, hpas, scaledobjects, list(workerpools.get(namespace, ())), ps.scale_kind
    )
    reading = await rt.scale_any.read(namespace, ps.scale_api_version, ps.scale_kind, name)
    if reading is None:
        return Target(name=name, exists=False, conflict=conflict)
    return Target(name=name, exists=True, replicas=reading.replicas, ready=reading.observed, conflict=conflict)


def build_registry(config: Config) -> kopf.OperatorRegistry:
    """All handlers, registered on a fresh registry with the configured tick."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(id="configure", registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        # Timeouts so a silently dropped watch is re-established (kopf #698).
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
        settings.posting.level = logging.WARNING  # our own Events are explicit; warnings from kopf still post
        settings.execution.max_workers = 8
        from .policy import PolicyUnavailable, make_gate

        memo.runtime = Runtime(
            config=config,
            reader=PrometheusReader(
                config.prometheus_url,
                ttl=max(1.0, config.tick * 0.8),
                timeout=config.query_timeout,
                on_query=telemetry.observe_query,
                auth=config.prometheus_auth,
                allowed=tenancy.allowed_addresses(config.guardrails, config.prometheus_url),
            ),
            gate=make_gate(config.opa),
            scaler=kube.KubeScaler(),
            scale_any=ScaleSubresource(),
            writer=kube.KubeStatusWriter(),
        )
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
        # Start a supervised local OPA now, so the first decision does not pay for it; failing here is not fatal
        # (the gate retries with back-off and each pool's failurePolicy applies meanwhile).
        start = getattr(memo.runtime.gate, "start", None)
        if start is not None:
            try:
                await start()
            except PolicyUnavailable as e:
                logger.warning("policy gate not available yet: %s", e)
        health.started = True

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """A fresh registry has none of kopf's default login handlers: log in the way the official client does
        (in-cluster service account, else the kubeconfig)."""
        return kopf.login_via_client(**kwargs)

    @kopf.on.cleanup(id="shutdown", registry=registry)
    async def shutdown(memo: kopf.Memo, **_: Any) -> None:
        watchdog = getattr(memo, "watchdog", None)
        if watchdog is not None:
            watchdog.cancel()
        runner = getattr(memo, "health_runner", None)
        if runner is not None:
            await runner.cleanup()
        rt = getattr(memo, "runtime", None)
        if rt is not None:
            await rt.gate.close()

    @kopf.on.event(GROUP, VERSION, PLURAL, id="known", registry=registry)
    def known(
        event: Mapping[str, Any], meta: kopf.Meta, namespace: str | None, name: str, memo: kopf.Memo, **_: Any
    ) -> None:
        """Every pool kopf sees must keep being evaluated: liveness checks each against its last tick (a pool being
        deleted no longer is: kopf stops its timer)."""
        health: Health | None = getattr(memo, "health", None)
        if health is not None:
            key = (namespace or "", name)
            if event.get("type") == "DELETED" or meta.get("deletionTimestamp"):
                health.gone(key)
            else:
                health.seen(key)

    @kopf.index("apps", "v1", "deployments", id="deployments", registry=registry)
    def deployments(
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
    def hpas(namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any) -> Any:
        ref = spec.get("scaleTargetRef") or {}
        return {(namespace or "", ref.get("kind", ""), ref.get("name", "")): name}

    @kopf.index("keda.sh", "v1alpha1", "scaledobjects", id="scaledobjects", registry=registry)
    def scaledobjects(namespace: str | None, name: str, spec: Mapping[str, Any], meta: kopf.Meta, **_: Any) -> Any:
        """KEDA ScaledObjects by target, paused ones included (a paused ScaledObject still owns its target)."""
        ref = spec.get("scaleTargetRef") or {}
        paused = any(k.startswith("autoscaling.keda.sh/paused") for k in (meta.get("annotations") or {}))
        return {(namespace or "", ref.get("kind") or "Deployment", ref.get("name", "")): (name, paused)}

    @kopf.index(GROUP, VERSION, PLURAL, id="workerpools", registry=registry)
    def workerpools(
        namespace: str | None, name: str, spec: Mapping[str, Any], status: Mapping[str, Any], meta: kopf.Meta, **_: Any
    ) -> Any:
        """Every WorkerPool by namespace, from the first tick on: for budgets and for one pool per Deployment."""
        created = str(meta.get("creationTimestamp") or "")
        return {namespace or "": tenancy.pool_index_entry(name, spec, status, created)}

    @kopf.on.resume(GROUP, VERSION, PLURAL, field="spec.template", id="template", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, field="spec.template", id="template", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec.template", id="template", registry=registry)
    async def ensure_template(body: kopf.Body, spec: kopf.Spec, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        """A pool with spec.template owns a Deployment named after it (garbage-collected with the pool)."""
        if not spec.get("template"):
            return
        try:
            ps = PoolSpec.from_dict(spec)
        except SpecError as e:
            raise kopf.PermanentError(f"invalid spec: {e}") from e
        rt = memo.runtime
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

    @kopf.timer(GROUP, VERSION, PLURAL, id="reconcile", interval=config.tick, sharp=False, registry=registry)
    async def reconcile(
        body: kopf.Body,
        meta: kopf.Meta,
        spec: kopf.Spec,
        namespace: str | None,
        name: str,
        memo: kopf.Memo,
        **kwargs: Any,
    ) -> None:
        """Never raises and leaves kopf's patch empty (see the module docstring): status, labels and the scale
        are written by :func:`chanscale.reconcile.tick`, which turns every fault into a condition."""
        rt: Runtime = memo.runtime
        deployments: kopf.Index[Any, Any] = kwargs["deployments"]
        hpas: kopf.Index[Any, Any] = kwargs["hpas"]
        target_name = (spec.get("template") and name) or (spec.get("scaleTargetRef") or {}).get("name") or name
        ref = spec.get("scaleTargetRef") or {}
        target: Target | None
        if ref.get("kind") in (None, "Deployment") or spec.get("template"):
            target = target_from_indexes(
                namespace or "", target_name, deployments, hpas, kwargs["scaledobjects"], kwargs["workerpools"], name
            )
        else:
            try:
                target = await target_from_scale(
                    rt, namespace or "", name, spec, hpas, kwargs["scaledobjects"], kwargs["workerpools"]
                )
            except kube.ScaleError as e:  # discovery or RBAC: the pool reports it, others carry on
                target = Target(name=target_name, exists=False, error=f"{e.reason}: {e}")
        result = await tick(rt, body, target)
        for etype, reason, message in result.events:
            kopf.event(body, type=etype, reason=reason, message=message[:1024])

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    def forget(namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
        rt = getattr(memo, "runtime", None)
        if rt is not None:
            rt.forget(namespace or "", name)

    return registry
