"""Faults inside the cluster, each in its own watched namespace with the examples' worker, simulator and pool:
the operator pod deleted during a scale-up, the Prometheus pod deleted, the OPA sidecar killed."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from kindstack import PROMETHEUS_NS, RELEASE_NS, KindStack
from kindtest import Sample, describe, observe, operator_pod, pod_ready, rollout, wait_for
from scenario import KubectlCluster, ProxyLoad, ScaleScenario

pytestmark = pytest.mark.e2e


def _start(stack: KindStack, cluster: KubectlCluster, ns: str, **overrides) -> tuple[ScaleScenario, ProxyLoad]:
    """The examples in ``ns`` (real pods: the simulator counts ready workers), settled at the low rate."""
    sc = ScaleScenario(namespace=ns, image=stack.images.operator, replicas_from="ready", log=stack.log, **overrides)
    cluster.apply(sc.manifests(with_simulator=True), ns)
    rollout(stack, ns, "chanscale-sim")
    load = ProxyLoad(stack.kubectl)
    load.set_rate(ns, sc.channel, sc.low_rate)
    sc.wait_replicas(cluster, lambda n: n <= sc.scaled_down_at_most, "baseline at low load", sc.up_timeout)
    # A healthy baseline before any fault: the pool reads its signals (so what follows is the fault's doing).
    samples: list[Sample] = []

    def reading() -> bool:
        samples.append(observe(stack, ns, sc.pool, sc.worker))
        return samples[-1].cond("MetricsAvailable")[0] == "True"

    wait_for(f"{ns}/{sc.pool} to read its signals", reading, sc.up_timeout, poll=2, explain=lambda: describe(samples))
    return sc, load


def _time(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_operator_pod_deleted_during_scale_up(stack: KindStack, cluster: KubectlCluster, workspace) -> None:
    """The replacement pod takes over the scale-up and never scales down while the load stays high."""
    ns = workspace("e2e-restart")
    # 2 pods per 20 s: the scale-up spans several ticks, so the deletion lands in the middle of it.
    slow_up = {
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 20}]}
    }
    sc, load = _start(stack, cluster, ns, pool_overrides={"behavior": slow_up}, scaled_up_at_least=5)
    old = operator_pod(stack)
    samples: list[Sample] = []

    def sample() -> Sample:
        samples.append(observe(stack, ns, sc.pool, sc.worker))
        return samples[-1]

    base = sample().replicas or 0
    load.set_rate(ns, sc.channel, sc.high_rate)
    wait_for(
        "the scale-up to start",
        lambda: (sample().replicas or 0) > base,
        sc.up_timeout,
        explain=lambda: describe(samples),
    )
    at_delete = samples[-1].replicas or 0
    assert at_delete < sc.scaled_up_at_least, f"the scale-up finished before the deletion: {describe(samples)}"
    stack.must("-n", RELEASE_NS, "delete", "pod", old["metadata"]["name"], "--wait=false")
    after = len(samples)

    def replacement_ready() -> dict | None:
        sample()
        pod = stack.operator_pod()
        ok = pod and pod["metadata"]["uid"] != old["metadata"]["uid"] and pod_ready(pod)
        return pod if ok else None

    new = wait_for("a Ready replacement operator pod", replacement_ready, 300, explain=lambda: describe(samples))
    started = next(s for s in new["status"]["containerStatuses"] if s["name"] == "operator")["state"]["running"]
    started_at = _time(started["startedAt"])

    def finished_by_the_new_pod() -> bool:
        s = sample()
        evaluated = (s.pool.get("status") or {}).get("lastEvaluated")
        return (s.replicas or 0) >= sc.scaled_up_at_least and bool(evaluated) and _time(evaluated) > started_at

    wait_for(
        "the new pod to finish the scale-up", finished_by_the_new_pod, sc.up_timeout, explain=lambda: describe(samples)
    )
    during = [s.replicas or 0 for s in samples[after:]]
    stack.log(f"[restart] deleted at {at_delete} replicas; after: {sorted(set(during))}")
    assert min(during) >= at_delete, f"scaled down below {at_delete} across the restart:\n{describe(samples)}"


def test_prometheus_pod_deleted(stack: KindStack, cluster: KubectlCluster, workspace) -> None:
    """Without Prometheus the pool holds, then its fallback (static 3) applies; with Prometheus back it recovers."""
    ns = workspace("e2e-prometheus")
    fallback = {"failureThreshold": 3, "behavior": "static", "replicas": 3}
    sc, _load = _start(stack, cluster, ns, pool_overrides={"fallback": fallback})
    samples: list[Sample] = []

    def sample() -> Sample:
        samples.append(observe(stack, ns, sc.pool, sc.worker))
        return samples[-1]

    base = sample().replicas
    assert base is not None and base < 3, describe(samples)
    assert samples[-1].cond("MetricsAvailable")[0] == "True", describe(samples)
    # Scale the Deployment to zero, which deletes the pod and keeps it away until the fallback has been seen.
    stack.must("-n", PROMETHEUS_NS, "scale", "deployment/prometheus", "--replicas=0")

    def prometheus_gone() -> bool:
        sample()  # the hold starts at once: keep recording while the pod terminates
        return not stack.must(
            "-n", PROMETHEUS_NS, "get", "pods", "-l", "app.kubernetes.io/name=prometheus", "-o", "name"
        )

    wait_for("the Prometheus pod to be gone", prometheus_gone, 120, explain=lambda: describe(samples))

    def fallback_applied() -> bool:
        s = sample()
        outcome = ((s.pool.get("status") or {}).get("lastDecision") or {}).get("outcome")
        return s.replicas == 3 and outcome == "Fallback"

    try:
        wait_for("the static fallback (3 replicas)", fallback_applied, 180, explain=lambda: describe(samples))
    finally:
        stack.must("-n", PROMETHEUS_NS, "scale", "deployment/prometheus", "--replicas=1")
    held = [s for s in samples if s.replicas == base and s.cond("MetricsAvailable")[0] == "False"]
    assert held, f"no hold observed before the fallback:\n{describe(samples)}"
    assert {s.replicas for s in samples} <= {base, 3}, describe(samples)
    stack.log(f"[prometheus] held at {base} for {len(held)} samples, then the static fallback: 3 replicas")

    rollout(stack, PROMETHEUS_NS, "prometheus")

    def recovered() -> bool:
        s = sample()
        return s.cond("MetricsAvailable")[0] == "True" and (s.replicas or 99) <= sc.scaled_down_at_most

    wait_for(
        "recovery: signals back and the fallback undone",
        recovered,
        sc.down_timeout,
        poll=3,
        explain=lambda: describe(samples),
    )


def _opa_containers(stack: KindStack, pod_uid: str, state: str = "running") -> list[str]:
    out = stack.crictl("ps", "-q", "--state", state, "--name", "^opa$", "--label", f"io.kubernetes.pod.uid={pod_uid}")
    return out.split()


def _restarts(pod: dict, name: str) -> int:
    statuses = [*pod["status"].get("initContainerStatuses", []), *pod["status"]["containerStatuses"]]
    return int(next(s for s in statuses if s["name"] == name)["restartCount"])


def test_opa_sidecar_killed(stack: KindStack, cluster: KubectlCluster, workspace) -> None:
    """While OPA is down a wanted scale-up is held (the release's failure policy, Hold); the kubelet restarts the
    sidecar, the operator container keeps running, and the pool scales once OPA answers again."""
    ns = workspace("e2e-opa")
    sc, load = _start(stack, cluster, ns)  # the release's policy.failurePolicy: Hold (manifests/chart-values.yaml)
    pod = operator_pod(stack)
    uid = pod["metadata"]["uid"]
    opa_restarts, operator_restarts = _restarts(pod, "opa"), _restarts(pod, "operator")
    samples: list[Sample] = []
    kills = 0

    def kill_running_opa() -> None:
        nonlocal kills
        for cid in _opa_containers(stack, uid):
            stack.crictl("stop", "--timeout", "0", cid)
            kills += 1

    # The first restart is immediate; killing it again puts the sidecar into the kubelet's restart back-off.
    kill_running_opa()
    wait_for("the kubelet to restart OPA", lambda: _opa_containers(stack, uid), 120)
    kill_running_opa()
    load.set_rate(ns, sc.channel, sc.high_rate)

    def held_by_failure_policy() -> Sample | None:
        kill_running_opa()  # keep it down until the operator has had to decide without it
        s = observe(stack, ns, sc.pool, sc.worker)
        samples.append(s)
        st = s.pool.get("status") or {}
        held = st.get("recommendedReplicas", 0) > (s.replicas or 0) and st.get("desiredReplicas") == s.replicas
        return s if s.cond("PolicyAllowed") == ("False", "PolicyUnavailable") and held else None

    held = wait_for("failurePolicy Hold", held_by_failure_policy, 240, explain=lambda: describe(samples))
    assert kills >= 2
    st = held.pool["status"]
    stack.log(f"[opa] {kills} kills; held at {held.replicas} while the model recommended {st['recommendedReplicas']}")

    def recovered() -> bool:
        s = observe(stack, ns, sc.pool, sc.worker)
        samples.append(s)
        return s.cond("PolicyAllowed")[0] == "True" and (s.replicas or 0) >= sc.scaled_up_at_least

    wait_for("OPA back and the scale-up done", recovered, 300, poll=2, explain=lambda: describe(samples))
    after = operator_pod(stack)
    assert after["metadata"]["uid"] == uid, "the operator pod was replaced"
    assert _restarts(after, "opa") > opa_restarts
    assert _restarts(after, "operator") == operator_restarts, "killing the sidecar restarted the operator"
    # OPA answering comes before the kubelet's next readiness probe of the sidecar: the pod turns Ready after that.
    wait_for(
        "the operator pod Ready again",
        lambda: pod_ready(operator_pod(stack)),
        120,
        explain=lambda: json.dumps(operator_pod(stack).get("status"), indent=1),
    )
