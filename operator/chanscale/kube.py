"""The Kubernetes edge: scaling through the Deployment's scale subresource, and owning template Deployments.

Uses the official ``kubernetes`` client (blocking; run in a worker thread), except for the WorkerPools' own status
and label writes, the most frequent, which go through kopf's session on the event loop
(:class:`SessionStatusWriter`). Every write carries the stable field manager ``chanscale``, so
``kubectl get deploy -o yaml --show-managed-fields`` and Argo CD's ``managedFieldsManagers`` can tell our replica
writes from Git's.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import hashlib
import inspect
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import FIELD_MANAGER, GROUP, PLURAL, VERSION
from .telemetry import KUBE_REQUESTS

POOL_LABEL = "chanscale.dev/pool"


_SHARED: list[Any] = []  # [(default Configuration, ApiClient)]


def api_client() -> Any:
    """One ApiClient for all of chanscale's own requests (kopf has its own session).

    ``client.XxxApi()`` without an argument builds a new ApiClient each time, hence a new connection pool, TLS
    context and TLS handshake per request: at 1 000 pools that was most of the operator's CPU and native memory.
    urllib3's pool is thread-safe; the client is rebuilt if the default configuration is replaced.
    """
    from kubernetes import client

    default = client.Configuration.get_default()
    if not _SHARED or _SHARED[0][0] is not default:
        config = client.Configuration.get_default_copy()
        config.connection_pool_maxsize = 16
        _SHARED[:] = [(default, client.ApiClient(config))]
    return _SHARED[0][1]


class ScaleError(Exception):
    """A scale write failed. ``reason`` is a condition reason (TargetNotFound, Forbidden, Conflict, ApiError)."""

    def __init__(self, reason: str, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class TemplateRejected(Exception):
    """The API server refused the Deployment built from spec.template (invalid, or refused by admission)."""


def template_digest(template: Mapping[str, Any]) -> str:
    """A short digest of a pod template (kopf's mapping views included), to notice that it changed."""
    text = json.dumps(template, sort_keys=True, default=lambda o: dict(o) if isinstance(o, Mapping) else str(o))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Scaler(Protocol):
    async def scale(self, namespace: str, name: str, replicas: int) -> None: ...


@dataclass
class KubeScaler:
    """Writes ``spec.replicas`` through ``deployments/scale`` (merge patch, field manager ``chanscale``)."""

    attempts: int = 3

    def _api(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(api_client())

    def _scale_sync(self, namespace: str, name: str, replicas: int) -> None:
        from kubernetes.client.exceptions import ApiException

        api = self._api()
        last: Exception | None = None
        for _ in range(self.attempts):
            try:
                KUBE_REQUESTS.labels("patch", "deployments/scale").inc()
                api.patch_namespaced_deployment_scale(
                    name,
                    namespace,
                    {"spec": {"replicas": replicas}},
                    field_manager=FIELD_MANAGER,
                    _request_timeout=10,
                )
                return
            except ApiException as e:
                last = e
                if e.status == 404:
                    raise ScaleError("TargetNotFound", f"Deployment {namespace}/{name} not found", False) from e
                if e.status == 403:
                    raise ScaleError(
                        "Forbidden", f"not allowed to scale {namespace}/{name}: check chanscale's RBAC", False
                    ) from e
                if e.status in (409, 429, 500, 503, 504):
                    continue  # conflict or overload: retry (merge patches carry no resourceVersion)
                raise ScaleError("ApiError", f"scale {namespace}/{name}: {e.status} {e.reason}", True) from e
            except Exception as e:  # connection errors
                last = e
        raise ScaleError("ApiError", f"scale {namespace}/{name} failed: {last}", True)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        await asyncio.to_thread(self._scale_sync, namespace, name, replicas)


def load_client_config(kubeconfig: str | None = None) -> None:
    """Configure the official client the way kopf logs in: in-cluster first, else the kubeconfig."""
    from kubernetes import config

    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            return
        except config.ConfigException:
            pass
    config.load_kube_config()


def deployment_for_template(pool: Mapping[str, Any], template: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """The Deployment a template pool owns: named after the pool, selected by ``chanscale.dev/pool``."""
    name = pool["metadata"]["name"]
    tpl = copy.deepcopy(dict(template))
    meta = tpl.setdefault("metadata", {})
    labels = meta.setdefault("labels", {})
    labels[POOL_LABEL] = name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": pool["metadata"]["namespace"],
            "labels": {POOL_LABEL: name, "app.kubernetes.io/managed-by": "chanscale"},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "WorkerPool",
                    "name": name,
                    "uid": pool["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": {POOL_LABEL: name}}, "template": tpl},
    }


def _ensure_deployment_sync(body: dict[str, Any]) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.AppsV1Api(api_client())
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        KUBE_REQUESTS.labels("create", "deployments").inc()
        api.create_namespaced_deployment(ns, body, field_manager=FIELD_MANAGER)  # type: ignore[arg-type]
        return "created"
    except ApiException as e:
        if e.status in (400, 403, 422):
            raise TemplateRejected(_api_message(e)) from e
        if e.status != 409:
            raise
    # Exists: update the template only; replicas belong to the scale subresource (and to us).
    KUBE_REQUESTS.labels("patch", "deployments").inc()
    existing = api.read_namespaced_deployment(name, ns)
    owners = (existing.metadata and existing.metadata.owner_references) or []
    if not any(o.uid == body["metadata"]["ownerReferences"][0]["uid"] for o in owners):
        raise ScaleError(
            "TargetConflict",
            f"Deployment {ns}/{name} exists and is not owned by this WorkerPool: rename the pool or use scaleTargetRef",
            False,
        )
    try:
        api.patch_namespaced_deployment(
            name, ns, {"spec": {"template": body["spec"]["template"]}}, field_manager=FIELD_MANAGER
        )
    except ApiException as e:
        if e.status in (400, 403, 422):
            raise TemplateRejected(_api_message(e)) from e
        raise
    return "updated"


def _api_message(e: Any) -> str:
    """The API server's own message from a Status body (it names the field), else the HTTP reason."""
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError, AttributeError):
        return f"{e.status} {e.reason}"


async def ensure_template_deployment(pool: Mapping[str, Any], template: Mapping[str, Any], replicas: int) -> str:
    """Create or update the Deployment a template pool owns. Returns "created" or "updated"."""
    return await asyncio.to_thread(_ensure_deployment_sync, deployment_for_template(pool, template, replicas))


class StatusWriteError(Exception):
    """A WorkerPool status or label write did not reach the API server (the caller retries on its next tick)."""


class StatusWriter(Protocol):
    async def write_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str | None: ...

    async def write_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None: ...


@dataclass
class KubeStatusWriter:
    """Merge-patches ``/status`` (and labels) of a WorkerPool itself, not through kopf's patch object.

    kopf retries a failed patch of a timer for ~55 s and then lets the error end the timer for good (kopf
    ``_timer`` → ``patch_and_check`` raises out of the loop; ``_runner`` marks it ``forever_stopped``). Writing
    here, once per attempt with a short timeout, turns an API outage into "retry on the next tick" instead.
    """

    timeout: float = 10.0

    def _write_status_sync(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str | None:
        from kubernetes import client

        KUBE_REQUESTS.labels("patch", "workerpools/status").inc()
        try:
            res = client.CustomObjectsApi(api_client()).patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(patch)},
                field_manager=FIELD_MANAGER,
                _request_timeout=self.timeout,
                _content_type="application/merge-patch+json",
            )
        except Exception as e:  # connection errors, 5xx, 404 of a just-deleted pool: all mean "not written"
            raise StatusWriteError(_short_error(e)) from e
        rv = ((res or {}).get("metadata") or {}).get("resourceVersion") if isinstance(res, Mapping) else None
        return str(rv) if rv is not None else None

    def _write_labels_sync(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        from kubernetes import client

        KUBE_REQUESTS.labels("patch", "workerpools").inc()
        try:
            client.CustomObjectsApi(api_client()).patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"metadata": {"labels": dict(labels)}},
                field_manager=FIELD_MANAGER,
                _request_timeout=self.timeout,
                _content_type="application/merge-patch+json",
            )
        except Exception as e:
            raise StatusWriteError(_short_error(e)) from e

    async def write_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str | None:
        return await asyncio.to_thread(self._write_status_sync, namespace, name, patch)

    async def write_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        await asyncio.to_thread(self._write_labels_sync, namespace, name, labels)


#: Ask for the written object's metadata only (``PartialObjectMetadata``; plain JSON if a server cannot): a write
#: needs its resourceVersion, not the whole pool back. The full answer carried the pool's status with its history,
#: which the API server encoded and the operator decoded for every write (3 % of the operator's samples at 1 000
#: pools).
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


#: The keyword arguments SessionStatusWriter passes to kopf's internal ``api.request`` (kopf 1.45).
_KOPF_REQUEST_PARAMS = {"method", "url", "payload", "headers", "timeout", "backoffs", "settings", "logger"}
_QUIET = logging.getLogger("chanscale.session")  # kopf logs each failed attempt as an error: we report it once
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())


@dataclass
class SessionStatusWriter:
    """The same writes as :class:`KubeStatusWriter`, through kopf's own authenticated aiohttp session, on the loop.

    The official client costs a worker thread per write, urllib3 and http.client in pure Python and its
    (de)serialisation layers: at 1 000 pools about 1.3 ms of the GIL per status write, most of the writes' CPU
    (bench/RESULTS.md, section 6, round h). One attempt per write, as there: a failure is retried on the next tick.
    kopf's credentials live in a context variable that tasks started from kopf handlers inherit (the ticker's do);
    outside one, or with a kopf whose internal client this does not know, the official client writes instead.
    """

    settings: Any
    timeout: float = 10.0
    fallback: KubeStatusWriter = field(default_factory=KubeStatusWriter)
    fell_back: bool = False  # logged once
    #: Writes in flight at once. Each holds one of the session's connections (TLS buffers: RSS) until it is
    #: answered; the official client's thread pool allowed 6 on 2 cores. The rest wait their turn on the loop.
    concurrency: int = 8
    _slots: asyncio.Semaphore | None = None
    _api: list[Any] | None = None  # [kopf's api module, or None when it is not the known one], checked once

    def _kopf_api(self) -> Any:
        """kopf's internal client module if it is the one this writer was written against (kopf 1.45's
        ``request`` and credentials vault), else None: a kopf that changed them gets the official client, not a
        failing write at every tick."""
        if self._api is None:
            try:
                from kopf._cogs.clients import api, auth

                params = set(inspect.signature(api.request).parameters)
                known = params >= _KOPF_REQUEST_PARAMS and isinstance(auth.vault_var, contextvars.ContextVar)
            except Exception:  # ImportError, a moved attribute, an uninspectable callable
                known = False
            self._api = [api if known else None]
        return self._api[0]

    def _fall_back(self, why: str) -> None:
        if not self.fell_back:
            self.fell_back = True
            logging.getLogger("chanscale").info("status writes through the official client: %s", why)

    async def _patch(self, path: str, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The patched object, or None when kopf's session is not usable here (the caller falls back)."""
        api = self._kopf_api()
        if api is None:
            self._fall_back("this kopf's internal client is not the one chanscale knows")
            return None
        from kopf._cogs.clients import auth

        try:
            auth.vault_var.get()
        except LookupError:
            self._fall_back("no kopf credentials in this context")
            return None
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        try:
            async with self._slots:
                return await self._send(api, path, body)
        except Exception as e:  # connection errors, 4xx/5xx (kopf's APIError), timeouts: all mean "not written"
            raise StatusWriteError(_short_error(e)) from e

    async def _send(self, api: Any, path: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        import aiohttp  # kopf's own dependency

        response = await api.request(
            method="patch",
            url=f"{path}?fieldManager={FIELD_MANAGER}",
            payload=dict(body),
            headers={"Content-Type": "application/merge-patch+json", "Accept": METADATA_ONLY},
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            backoffs=(),
            settings=self.settings,
            logger=_QUIET,
        )
        async with response:
            data = await response.json()
        return data if isinstance(data, Mapping) else {}

    @staticmethod
    def _path(namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def write_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> str | None:
        res = await self._patch(self._path(namespace, name) + "/status", {"status": dict(patch)})
        if res is None:
            return await self.fallback.write_status(namespace, name, patch)
        KUBE_REQUESTS.labels("patch", "workerpools/status").inc()
        rv = (res.get("metadata") or {}).get("resourceVersion")
        return str(rv) if rv is not None else None

    async def write_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        if await self._patch(self._path(namespace, name), {"metadata": {"labels": dict(labels)}}) is None:
            await self.fallback.write_labels(namespace, name, labels)
            return
        KUBE_REQUESTS.labels("patch", "workerpools").inc()


def _short_error(e: Exception) -> str:
    status = getattr(e, "status", None)
    if status:
        return f"HTTP {status} {getattr(e, 'reason', '')}".strip()
    return f"{type(e).__name__}: {str(e)[:200]}"


def replicas_manager(managed_fields: Any) -> str | None:
    """The field manager that last set ``spec.replicas`` of a Deployment (from ``metadata.managedFields``).

    An Update moves a field's ownership to the writer that changed it, so the owner of ``f:spec.f:replicas`` is
    the last writer of the count: ``chanscale`` for our scale writes, ``kubectl`` for ``kubectl scale``, the Argo CD
    or CI tool's manager name otherwise. The newest entry wins when several own it (server-side apply).
    """
    best: tuple[str, str] | None = None
    for entry in managed_fields or ():
        fields = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" not in fields:
            continue
        when = str(entry.get("time") or "")
        if best is None or when >= best[0]:
            best = (when, str(entry.get("manager") or "unknown"))
    return best[1] if best else None
