"""Any scalable target, through the ``/scale`` subresource and API discovery, as KEDA does.

Deployments are read from kopf's index (no request per tick). Any other kind the admin enabled (``--scale-kind
StatefulSet.apps``, ``--scale-kind Rollout.argoproj.io``) is resolved once through discovery (``GET
/apis/<group>/<version>``: the plural, and whether ``<plural>/scale`` is served) and then read and written through
its scale subresource only: ``spec.replicas`` to scale, ``status.replicas`` as the observed count. The operator's
RBAC needs ``get``/``patch`` on ``<plural>/scale`` and nothing on the resource itself (chart ``rbac.scaleTargets``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from . import FIELD_MANAGER
from .kube import ScaleError
from .telemetry import KUBE_REQUESTS

DISCOVERY_TTL = 300.0  # seconds a resolved kind (or "not served") is trusted


@dataclass(frozen=True)
class ScaleReading:
    replicas: int  # spec.replicas of the scale subresource: what the target is asked to run
    observed: int | None  # status.replicas


@dataclass
class ScaleSubresource:
    """Reads and scales any kind with a ``/scale`` subresource (blocking client calls in worker threads)."""

    _plurals: dict[tuple[str, str], tuple[float, str | None]] = field(default_factory=dict)

    def _resolve_sync(self, api_version: str, kind: str) -> str:
        from kubernetes import client

        now = time.monotonic()
        hit = self._plurals.get((api_version, kind))
        if hit is None or now - hit[0] > DISCOVERY_TTL:
            KUBE_REQUESTS.labels("get", "discovery").inc()
            group, version = api_version.split("/", 1)
            listed = client.CustomObjectsApi().get_api_resources(group, version, _request_timeout=10).resources or []
            names = {r.name for r in listed}
            plural = next((r.name for r in listed if r.kind == kind and "/" not in r.name), None)
            hit = (now, plural if plural and f"{plural}/scale" in names else None)
            self._plurals[(api_version, kind)] = hit
        if hit[1] is None:
            raise ScaleError("ScaleNotSupported", f"{kind} in {api_version} has no /scale subresource", False)
        return hit[1]

    def _read_sync(self, namespace: str, api_version: str, kind: str, name: str) -> ScaleReading | None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        group, version = api_version.split("/", 1)
        plural = self._resolve_sync(api_version, kind)
        KUBE_REQUESTS.labels("get", f"{plural}/scale").inc()
        try:
            scale: Any = client.CustomObjectsApi().get_namespaced_custom_object_scale(
                group, version, namespace, plural, name, _request_timeout=10
            )
        except ApiException as e:
            if e.status == 404:
                return None
            if e.status == 403:
                raise ScaleError(
                    "Forbidden", f"not allowed to read {plural}/scale: check chanscale's RBAC", False
                ) from e
            raise ScaleError("ApiError", f"get {plural}/{name}/scale: {e.status} {e.reason}", True) from e
        spec, status = scale.get("spec") or {}, scale.get("status") or {}
        observed = status.get("replicas")
        return ScaleReading(int(spec.get("replicas") or 0), None if observed is None else int(observed))

    def _scale_sync(self, namespace: str, api_version: str, kind: str, name: str, replicas: int) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        group, version = api_version.split("/", 1)
        plural = self._resolve_sync(api_version, kind)
        KUBE_REQUESTS.labels("patch", f"{plural}/scale").inc()
        try:
            client.CustomObjectsApi().patch_namespaced_custom_object_scale(
                group,
                version,
                namespace,
                plural,
                name,
                {"spec": {"replicas": replicas}},
                field_manager=FIELD_MANAGER,
                _request_timeout=10,
            )
        except ApiException as e:
            if e.status == 404:
                raise ScaleError("TargetNotFound", f"{kind} {namespace}/{name} not found", False) from e
            if e.status == 403:
                raise ScaleError("Forbidden", f"not allowed to scale {plural}: check chanscale's RBAC", False) from e
            raise ScaleError("ApiError", f"scale {kind} {namespace}/{name}: {e.status} {e.reason}", True) from e

    async def read(self, namespace: str, api_version: str, kind: str, name: str) -> ScaleReading | None:
        """The target's scale, or None when it does not exist."""
        return await asyncio.to_thread(self._read_sync, namespace, api_version, kind, name)

    async def scale(self, namespace: str, api_version: str, kind: str, name: str, replicas: int) -> None:
        await asyncio.to_thread(self._scale_sync, namespace, api_version, kind, name, replicas)
