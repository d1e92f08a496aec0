"""Helpers of the kind e2e tests (not fixtures: those are in conftest.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kindstack import RELEASE_NS, E2EError, KindStack


def clean(stack: KindStack, ns: str) -> None:
    """Empty a pre-created e2e namespace: WorkerPools first (while the operator runs, so that it removes its
    finalizer), then the examples' objects. The namespace stays: the release's Roles live in it."""
    stack.kubectl("-n", ns, "delete", "workerpools.chanscale.dev", "--all", "--timeout=120s")
    stack.kubectl(
        "-n", ns, "delete", "deployments,services,configmaps,jobs,serviceaccounts,roles,rolebindings",
        "-l", "app.kubernetes.io/part-of=chanscale-demo", "--timeout=120s",
    )  # fmt: skip


def conditions(pool: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """A WorkerPool's conditions by type."""
    return {c["type"]: c for c in ((pool or {}).get("status") or {}).get("conditions", [])}


def wait_for(what: str, check: Callable[[], Any], timeout: float, poll: float = 1.0, explain: Callable[[], str] = str):
    """Poll ``check`` until it returns something truthy (returned); on timeout fail with ``explain()``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{explain()}", pytrace=False)
        time.sleep(poll)


def operator_pod(stack: KindStack) -> dict[str, Any]:
    pod = stack.operator_pod()
    assert pod is not None, stack.kubectl("-n", RELEASE_NS, "get", "pods", "-o", "wide").stdout
    return pod


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def events_for(stack: KindStack, namespace: str, name: str, uid: str | None = None) -> list[dict[str, Any]]:
    """The Events about a WorkerPool (only this incarnation of it when ``uid`` is given: Events outlive objects)."""
    selector = f"involvedObject.kind=WorkerPool,involvedObject.name={name}"
    if uid:
        selector += f",involvedObject.uid={uid}"
    res = stack.kubectl("-n", namespace, "get", "events", "--field-selector", selector, "-o", "json")
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout)["items"])


def deployment(stack: KindStack, namespace: str, name: str) -> dict[str, Any] | None:
    res = stack.kubectl("-n", namespace, "get", "deployment", name, "-o", "json")
    return json.loads(res.stdout) if res.returncode == 0 else None


def all_pods_ready(stack: KindStack, namespace: str, name: str, at_least: int) -> int | None:
    """The Deployment's replicas when it has at least ``at_least`` and every one of its pods is Ready (pods that
    really started on the kubelet), else None."""
    d = deployment(stack, namespace, name)
    if d is None:
        return None
    want, status = int(d["spec"].get("replicas", 1)), d.get("status") or {}
    ok = want >= at_least and status.get("readyReplicas", 0) == want and status.get("updatedReplicas", 0) == want
    return want if ok else None


def rollout(stack: KindStack, namespace: str, deployment_name: str) -> None:
    try:
        stack.rollout(namespace, deployment_name)
    except E2EError as e:
        pytest.fail(str(e), pytrace=False)


@dataclass
class Sample:
    """One observation of a pool and its worker Deployment."""

    t: float
    replicas: int | None
    ready: int
    pool: dict[str, Any]

    def cond(self, kind: str) -> tuple[str, str]:
        c = conditions(self.pool).get(kind) or {}
        return c.get("status", ""), c.get("reason", "")


def observe(stack: KindStack, namespace: str, pool: str, worker: str) -> Sample:
    d = deployment(stack, namespace, worker)
    res = stack.kubectl("-n", namespace, "get", "workerpools.chanscale.dev", pool, "-o", "json")
    return Sample(
        t=time.monotonic(),
        replicas=None if d is None else int(d["spec"].get("replicas", 1)),
        ready=0 if d is None else int((d.get("status") or {}).get("readyReplicas", 0)),
        pool=json.loads(res.stdout) if res.returncode == 0 else {},
    )


def describe(samples: list[Sample], last: int = 30) -> str:
    """A failure message: the recent replica/condition history and the pool's last status."""
    rows = [
        f"  replicas={s.replicas} ready={s.ready} metrics={s.cond('MetricsAvailable')} "
        f"policy={s.cond('PolicyAllowed')} slo={s.cond('SLOMet')}"
        for s in samples[-last:]
    ]
    status = samples[-1].pool.get("status") if samples else None
    return "\n".join(rows) + "\nlast status:\n" + json.dumps(status, indent=1)[:4000]
