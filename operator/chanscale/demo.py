"""``chanscale demo`` (``make demo``): the whole loop on one machine, watched live, ending with a plot.

What runs (all children of this process, all on 127.0.0.1, all stopped on exit or Ctrl-C):

* a local control plane (etcd + kube-apiserver + kube-controller-manager; :mod:`chanscale.local.cluster`), unless
  ``--kubeconfig`` names an existing cluster;
* Prometheus scraping every second (:mod:`chanscale.local.prometheus`);
* the channel simulator (``chanscale sim``), whose workers are the worker Deployment's ``spec.replicas``;
* the operator (``chanscale run --opa local``), which supervises its own OPA child with the shipped policies.

The demo creates namespace ``chanscale-demo`` with a worker Deployment and a WorkerPool (P99 SLO 1 s, a step limit
of +2/-2 replicas per decision so the policy gate visibly clamps the burst), then drives a bursty load through
the simulator's ``/control``: quiet, a ×5 burst, quiet, a ×4 burst, quiet. It owns the clock (rather than giving
the simulator a trace) so the trace starts only once the operator is deciding, however long start-up took.

Why a live view *and* a plot: the view shows cause and effect as it happens (backlog up → decision → replicas up,
and the policy's reason when it clamps); the plot and ``summary.md`` are what one keeps and shares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from . import GROUP, PLURAL, VERSION
from .demo_plot import DemoRecord, Mark, Phase, Sample, write_outputs

NAMESPACE = "chanscale-demo"
POOL = "orders"
CHANNEL = "orders"
DEPLOYMENT = "orders-worker"
CRD_NAME = f"{PLURAL}.{GROUP}"
#: Any image works on the local control plane (no kubelet: pods never start). On a real cluster the pause image
#: runs and does nothing, so the pods are cheap and never crash-loop.
WORKER_IMAGE = "registry.k8s.io/pause:3.10"


@dataclass(frozen=True)
class Scenario:
    """The demo's channel, SLO and guard. Chosen so the burst needs ~4× the quiet replicas and a +2 step
    limit binds for several ticks, which is what makes the clamp marks visible on the plot."""

    base_rate: float = 30.0  # msgs/s while quiet
    burst_factor: float = 5.0
    second_burst_factor: float = 4.0
    service_rate: float = 10.0  # msgs/s one worker completes (exponential service times)
    startup_delay: float = 3.0  # seconds before a new worker consumes
    slo_p99: float = 1.0
    max_backlog: int = 300
    backlog_drain_seconds: float = 10.0  # clear a burst's backlog fast: the drain term then asks for big steps
    min_replicas: int = 2
    max_replicas: int = 30
    initial_replicas: int = 4
    step_up: int = 2
    step_down: int = 2
    tick: float = 2.0  # operator --tick
    rate_window: str = "15s"  # short, so the 1 s-scraped rates follow a burst within seconds

    @property
    def policy_parameters(self) -> dict[str, Any]:
        return {"step": {"maxUp": self.step_up, "maxDown": self.step_down}}


# ------------------------------------------------------------------------------------------------ manifests
def bursty_trace(duration: float, sc: Scenario) -> list[Phase]:
    """quiet → burst ×5 → quiet → burst ×4 → quiet, as fractions of ``duration`` (so a short run keeps the shape)."""
    d = float(duration)
    b1, b2 = sc.base_rate * sc.burst_factor, sc.base_rate * sc.second_burst_factor
    cuts = [
        (0.0, 0.2, sc.base_rate, "quiet"),
        (0.2, 0.45, b1, f"burst 1 ×{sc.burst_factor:g}"),
        (0.45, 0.7, sc.base_rate, "quiet"),
        (0.7, 0.85, b2, f"burst 2 ×{sc.second_burst_factor:g}"),
        (0.85, 1.0, sc.base_rate, "quiet"),
    ]
    return [Phase(round(a * d, 1), round(b * d, 1), rate, label) for a, b, rate, label in cuts]


def phase_at(phases: list[Phase], t: float) -> Phase:
    for ph in phases:
        if ph.start <= t < ph.end:
            return ph
    return phases[-1]


def worker_deployment(sc: Scenario) -> dict[str, Any]:
    labels = {"app": DEPLOYMENT, "app.kubernetes.io/part-of": "chanscale-demo"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": sc.initial_replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": WORKER_IMAGE,
                            "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
                        }
                    ]
                },
            },
        },
    }


def worker_pool(sc: Scenario) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkerPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "chanscale-demo"}},
        "spec": {
            "channel": CHANNEL,
            "scaleTargetRef": {"name": DEPLOYMENT},
            "minReplicas": sc.min_replicas,
            "maxReplicas": sc.max_replicas,
            "slo": {
                "p99LatencySeconds": sc.slo_p99,
                "maxBacklog": sc.max_backlog,
                "backlogDrainSeconds": sc.backlog_drain_seconds,
            },
            "model": {"serviceRateHint": sc.service_rate},
            "metrics": {"rateWindow": sc.rate_window},
            # The HPA's 300 s scale-down window would hide the scale-down in a four-minute demo.
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": 20,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 10}],
                }
            },
            "policy": {"parameters": sc.policy_parameters},
        },
    }


def sim_channels(sc: Scenario) -> list[dict[str, Any]]:
    return [
        {
            "namespace": NAMESPACE,
            "channel": CHANNEL,
            "deployment": DEPLOYMENT,
            "serviceRate": sc.service_rate,
            "serviceDist": "exponential",
            "startupDelaySeconds": sc.startup_delay,
            "arrivalRate": sc.base_rate,
            # Start with the Deployment's replicas already working: no cold-start backlog before the trace.
            "replicas": sc.initial_replicas,
        }
    ]


# ---------------------------------------------------------------------------------------------------- stack
class DemoError(RuntimeError):
    """The demo cannot go on; the message says why and what to do."""


def required_binaries(external_cluster: bool) -> list[str]:
    names = ["prometheus"]
    if not external_cluster:
        names = ["etcd", "kube-apiserver", "kube-controller-manager", *names]
    return names


def check_binaries(external_cluster: bool, real: bool = False) -> None:
    """Fail before starting anything when a tool is missing, naming all of them and the fix (`make tools`)."""
    from .local.binaries import BinaryNotFound, find_binaries
    from .local.opa import OpaNotFound, find_opa_binary

    problems: list[str] = []
    try:
        find_binaries(*required_binaries(external_cluster), *(["nats-server"] if real else []))
    except BinaryNotFound as e:
        problems.append(str(e))
    try:
        find_opa_binary()
    except OpaNotFound as e:
        problems.append(str(e))
    if problems:
        raise DemoError(
            "missing tools - run `make tools` (and `hack/tools.sh nats-server` for --real):\n" + "\n".join(problems)
        )
    # The plot is drawn at the end: find out now, not after a four-minute run.
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise DemoError(
            f"matplotlib is needed for the plot ({e}): run `make install` or pip install 'chanscale[plot]'"
        ) from e


@dataclass
class DemoStack:
    """Control plane (optional), Prometheus, simulator and operator; started in that order, stopped in reverse."""

    out: Path
    scenario: Scenario
    kubeconfig: Path | None = None  # an existing cluster; None starts the local control plane
    real: bool = False  # the channel on NATS JetStream with Go SDK workers (demo_real.py) instead of the simulator
    say: Callable[[str], None] = print
    cp: Any = None
    prom: Any = None
    sim: Any = None
    operator: Any = None
    api: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def active_kubeconfig(self) -> Path:
        if self.kubeconfig is not None:
            return self.kubeconfig
        assert self.cp is not None
        return Path(self.cp.kubeconfig)

    def _timed(self, what: str, fn: Callable[[], Any]) -> Any:
        self.say(f"  starting {what} ...")
        began = time.monotonic()
        result = fn()
        self.timings[what] = time.monotonic() - began
        self.say(f"  {what} ready in {self.timings[what]:.1f}s")
        return result

    def start(self) -> None:
        from kubernetes import config as kconfig

        from .local.cluster import LocalControlPlane
        from .local.prometheus import LocalPrometheus

        self.logs.mkdir(parents=True, exist_ok=True)
        if self.kubeconfig is None:
            self.cp = self._timed(
                "local control plane (etcd, kube-apiserver, kube-controller-manager)",
                lambda: LocalControlPlane().start(),
            )
        else:
            self.say(f"  using the cluster in {self.kubeconfig} (no local control plane)")
        self.api = kconfig.new_client_from_config(config_file=str(self.active_kubeconfig))
        self._timed("WorkerPool CRD", self._ensure_crd)
        self._timed("namespace, worker Deployment and WorkerPool", self._create_objects)
        self.prom = self._timed("Prometheus", lambda: LocalPrometheus(scrape_interval="1s").start())
        self._timed("NATS JetStream, load generator and workers" if self.real else "channel simulator", self._start_sim)
        self._timed("operator (with a local OPA)", self._start_operator)

    # -- Kubernetes objects
    def _ensure_crd(self) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        from .local.binaries import REPO_ROOT

        ext = client.ApiextensionsV1Api(self.api)
        try:
            ext.read_custom_resource_definition(CRD_NAME)
        except ApiException as e:
            if e.status != 404:
                raise DemoError(f"cannot read CRD {CRD_NAME}: {e.status} {e.reason}") from e
            crd = yaml.safe_load((REPO_ROOT / "crds" / f"{GROUP}_{PLURAL}.yaml").read_text())
            try:
                ext.create_custom_resource_definition(crd)
            except ApiException as e2:
                raise DemoError(
                    f"the WorkerPool CRD is not installed and creating it failed ({e2.status} {e2.reason}); "
                    f"install it with `kubectl apply -f crds/`"
                ) from e2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            crd_status = ext.read_custom_resource_definition(CRD_NAME).status
            conds = (crd_status.conditions if crd_status else None) or []
            if any(c.type == "Established" and c.status == "True" for c in conds):
                return
            time.sleep(0.2)
        raise DemoError(f"CRD {CRD_NAME} did not become Established within 60s")

    def _create_objects(self) -> None:
        """Namespace, then a *fresh* Deployment and WorkerPool: a re-run must not inherit an old status history."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core, apps, custom = client.CoreV1Api(self.api), client.AppsV1Api(self.api), client.CustomObjectsApi(self.api)
        try:
            ns: Any = {"metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "chanscale-demo"}}}
            core.create_namespace(ns)  # the client accepts plain dicts as bodies
        except ApiException as e:
            if e.status != 409:
                raise DemoError(f"cannot create namespace {NAMESPACE}: {e.status} {e.reason}") from e
        with contextlib.suppress(ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, POOL)
            # The previous run's operator is gone, so nobody would remove its kopf finalizer: drop it ourselves.
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, POOL, {"metadata": {"finalizers": None}}
            )
        with contextlib.suppress(ApiException):
            apps.delete_namespaced_deployment(DEPLOYMENT, NAMESPACE, propagation_policy="Background")
        self._wait_gone(lambda: custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, POOL))
        self._wait_gone(lambda: apps.read_namespaced_deployment(DEPLOYMENT, NAMESPACE))
        deployment: Any = worker_deployment(self.scenario)
        apps.create_namespaced_deployment(NAMESPACE, deployment)
        custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, worker_pool(self.scenario))

    @staticmethod
    def _wait_gone(read: Callable[[], Any], timeout: float = 60) -> None:
        from kubernetes.client.exceptions import ApiException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                read()
            except ApiException as e:
                if e.status == 404:
                    return
                raise
            time.sleep(0.2)
        raise DemoError(
            f"an old demo object was not deleted within 60s (a finalizer?); delete namespace {NAMESPACE} and retry"
        )

    # -- processes
    def _start_sim(self) -> None:
        if self.real:
            from .demo_real import RealChannel

            sc = self.scenario
            self.sim = RealChannel(
                self.logs, self.prom, NAMESPACE, CHANNEL, 1 / sc.service_rate, sc.base_rate, sc.initial_replicas
            )
            self.sim.start()
            return
        from .local.harness import SimProcess

        self.sim = SimProcess("chanscale-sim", sim_channels(self.scenario), self.logs, self.active_kubeconfig)
        self.sim.start(timeout=60)
        self.prom.add_target(self.sim.address)
        self.prom.wait_for_target(self.sim.address, timeout=60)

    def _start_operator(self) -> None:
        from .local.harness import OperatorProcess

        self.operator = OperatorProcess.local(
            "chanscale-operator",
            self.logs / "operator.log",
            self.active_kubeconfig,
            self.prom.url,
            opa="local",
            namespaces=[NAMESPACE],
            tick=self.scenario.tick,
            # Every tick's signals in the status, so the live view's P99 is at most one tick old.
            extra_args=["--status-refresh", "1"],
        )
        self.operator.start()
        self.operator.wait_healthy(timeout=120)

    def check_running(self) -> None:
        """Raise with the log tail when a component died mid-run (a silent flat line would mislead)."""
        from .local.process import ProcessFailed

        for name, proc in (("operator", self.operator), ("simulator", self.sim)):
            if proc is not None and proc.proc is not None and not proc.proc.running:
                raise ProcessFailed(
                    f"the {name} exited; its log ({proc.proc.log_path}) ends with:\n{proc.proc.log_tail(30)}"
                )
        if self.real and self.sim is not None:
            self.sim.check_running()
        if self.prom is not None and self.prom.process is not None:
            self.prom.process.check_running()
        if self.cp is not None:
            self.cp.check_running()

    def set_rate(self, rate: float) -> None:
        self.sim.set_arrival_rate(NAMESPACE, CHANNEL, rate)

    def read_pool(self) -> dict[str, Any]:
        from kubernetes import client

        wp: dict[str, Any] = client.CustomObjectsApi(self.api).get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, NAMESPACE, PLURAL, POOL
        )
        return wp

    def sim_state(self) -> dict[str, Any]:
        if self.real:  # the demo is the kubelet here: one worker process per replica of the Deployment
            from kubernetes import client

            d = client.AppsV1Api(self.api).read_namespaced_deployment(DEPLOYMENT, NAMESPACE)
            return dict(self.sim.state(d.spec.replicas))
        with urllib.request.urlopen(f"{self.sim.url}/state", timeout=3) as resp:
            data: dict[str, Any] = json.load(resp)
        for ch in data.get("channels", []):
            if ch.get("namespace") == NAMESPACE and ch.get("channel") == CHANNEL:
                return dict(ch)
        return {}

    def stop(self) -> None:
        """Stop in reverse order; each step runs even if an earlier one fails, so nothing is left behind."""
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("operator", lambda: self.operator and self.operator.stop()),
            ("simulator", lambda: self.sim and self.sim.stop()),
            ("prometheus", lambda: self.prom and self.prom.stop()),
            ("api client", lambda: self.api and self.api.close()),
            ("control plane", lambda: self.cp and self.cp.stop()),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as e:  # keep tearing down the rest
                print(f"warning: stopping the {name} failed: {e}", file=sys.stderr)


# -------------------------------------------------------------------------------------------------- sampling
def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


class Sampler:
    """Turns the simulator's state and the pool's status into :class:`Sample` s and policy :class:`Mark` s.

    A policy intervention is detected once per operator decision: a new ``lastDecision.time`` whose verdict
    clamped or denied, or a new quiet tick (``lastQuietTick``) held by a policy reason.
    """

    def __init__(self) -> None:
        self._seen_decision: str | None = None
        self._seen_quiet: str | None = None

    def make(self, t: float, sim: dict[str, Any], wp: dict[str, Any] | None) -> tuple[Sample, list[Mark]]:
        st = (wp or {}).get("status") or {}
        sig = st.get("signals") or {}
        d = st.get("lastDecision") or {}
        quiet = d.get("lastQuietTick") is not None and d.get("lastQuietTick") == st.get("lastEvaluated")
        sample = Sample(
            t=round(t, 2),
            arrival_rate=_num(sim.get("arrival_rate")),
            backlog=_num(sim.get("backlog")),
            ready_workers=_int(sim.get("ready_workers")),
            replicas=_int(sim.get("desired_workers", st.get("replicas"))),
            desired=_int(st.get("desiredReplicas")),
            recommended=_int(st.get("recommendedReplicas")),
            p99=_num(sig.get("p99LatencySeconds")),
            outcome="NoChange" if quiet else d.get("outcome"),
            reason=d.get("quietReason") if quiet else d.get("reason"),
            last_change=f"{d.get('outcome')} {d.get('from')} -> {d.get('to')} at {d.get('time')}" if d else None,
            limited_by=list((d.get("quietLimitedBy") if quiet else d.get("limitedBy")) or []),
        )
        return sample, self._marks(t, d)

    def _marks(self, t: float, d: dict[str, Any]) -> list[Mark]:
        marks: list[Mark] = []
        when = d.get("time")
        if when and when != self._seen_decision:
            self._seen_decision = when
            pol = d.get("policy") or {}
            if pol and not pol.get("allow", True):
                marks.append(
                    Mark(t, "deny", d.get("from"), d.get("to"), pol.get("proposed"), list(pol.get("reasons") or []))
                )
            elif pol and pol.get("replicas") is not None and pol.get("replicas") != pol.get("proposed"):
                marks.append(
                    Mark(t, "clamp", d.get("from"), d.get("to"), pol.get("proposed"), list(pol.get("reasons") or []))
                )
        quiet = d.get("lastQuietTick")
        if quiet and quiet != self._seen_quiet:
            self._seen_quiet = quiet
            policy_limits = [x[len("policy: ") :] for x in d.get("quietLimitedBy") or [] if x.startswith("policy: ")]
            if policy_limits:
                marks.append(Mark(t, "deny", d.get("to"), d.get("to"), None, policy_limits))
        return marks


# ------------------------------------------------------------------------------------------------ live view
_SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int) -> str:
    vals = values[-width:]
    known = [v for v in vals if v is not None]
    if not known:
        return ""
    top = max(known) or 1.0
    return "".join(" " if v is None else _SPARK[min(7, int(v / top * 7.999))] for v in vals)


def _f(v: float | None, fmt: str, none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def render_block(
    sample: Sample, phase: Phase, duration: float, slo: float, marks: list[Mark], history: list[Sample], width: int
) -> list[str]:
    """The live view's lines (no escapes): status line, signals, replicas, last decision and why, sparklines."""
    ok = None if sample.p99 is None else sample.p99 <= slo
    verdict = {None: "?", True: "ok", False: "MISSED"}[ok]
    clamps = sum(m.kind == "clamp" for m in marks)
    denies = sum(m.kind == "deny" for m in marks)
    lines = [
        f"chanscale demo {NAMESPACE}/{POOL}  t={sample.t:4.0f}s/{duration:.0f}s  {phase.label}  (Ctrl-C stops)",
        f"  arrivals {_f(sample.arrival_rate, '6.1f')}/s  backlog {_f(sample.backlog, '6.0f')}  "
        f"P99 {_f(sample.p99, '5.2f')}s  SLO {slo:g}s [{verdict}]",
        f"  replicas {_f(sample.replicas, 'd'):>3}  ready {_f(sample.ready_workers, 'd'):>3}  "
        f"desired {_f(sample.desired, 'd'):>3}  model {_f(sample.recommended, 'd'):>3}  "
        f"policy: {clamps} clamped, {denies} denied",
        f"  decision: {sample.outcome or '-'}   last change: {sample.last_change or '-'}",
        f"    why: {sample.reason or '-'}",
    ]
    if sample.limited_by:
        lines.append(f"    limited by: {'; '.join(sample.limited_by)}")
    spark_w = max(10, min(60, width - 14))
    lines.append(f"  backlog  {sparkline([s.backlog for s in history], spark_w)}")
    lines.append(
        f"  replicas {sparkline([None if s.replicas is None else float(s.replicas) for s in history], spark_w)}"
    )
    return [ln if len(ln) <= width else ln[: max(1, width - 1)] + "…" for ln in lines]


def plain_line(sample: Sample, phase: Phase, slo: float) -> str:
    """One log line for CI and pipes (``--no-tui``)."""
    return (
        f"t={sample.t:5.0f}s {phase.label:<12} arrivals={_f(sample.arrival_rate, '.1f')}/s "
        f"backlog={_f(sample.backlog, '.0f')} p99={_f(sample.p99, '.2f')}s(slo {slo:g}) "
        f"replicas={_f(sample.replicas, 'd')} desired={_f(sample.desired, 'd')} "
        f"| {sample.outcome or '-'}: {sample.reason or '-'}"
    )


class LiveView:
    """Redraws a compact block in place on a TTY (ANSI: cursor up, clear to end); else prints plain lines."""

    def __init__(self, stream: TextIO, tui: bool, duration: float, slo: float, plain_every: float = 5.0) -> None:
        self.stream = stream
        self.tui = tui
        self.duration = duration
        self.slo = slo
        self.plain_every = plain_every
        self._drawn = 0
        self._last_plain = -1e9

    def update(
        self, sample: Sample, phase: Phase, marks: list[Mark], history: list[Sample], new_marks: list[Mark]
    ) -> None:
        if self.tui:
            width = shutil.get_terminal_size((100, 24)).columns
            lines = render_block(sample, phase, self.duration, self.slo, marks, history, width)
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self.stream.flush()
            self._drawn = len(lines)
            return
        for m in new_marks:
            self.stream.write(f"t={m.t:5.0f}s policy {m.kind}: {'; '.join(m.reasons)}\n")
        if sample.t - self._last_plain >= self.plain_every:
            self._last_plain = sample.t
            self.stream.write(plain_line(sample, phase, self.slo) + "\n")
        self.stream.flush()

    def start(self) -> None:
        if self.tui:
            self.stream.write("\x1b[?25l")  # hide the cursor while redrawing

    def close(self) -> None:
        if self.tui:
            self.stream.write("\x1b[?25h")
            self.stream.flush()


# ------------------------------------------------------------------------------------------------------ run
@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. `timeout`, a CI runner) tears down like Ctrl-C does."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """A second Ctrl-C during teardown must not abandon half-stopped children (each stop is bounded: 10 s)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_for_first_decision(stack: DemoStack, timeout: float = 120.0) -> None:
    """Bounded wait until the operator has read the channel's signals and written a status (the loop is closed)."""
    from .local.process import wait_until

    def ready() -> bool:
        stack.check_running()
        st = stack.read_pool().get("status") or {}
        sig = st.get("signals") or {}
        return sig.get("arrivalRate") is not None and sig.get("backlog") is not None

    procs = [p.proc for p in (stack.operator, stack.sim) if p is not None and p.proc is not None]
    wait_until(
        ready, timeout, "the operator's first decision with signals (WorkerPool status.signals)", procs, interval=0.5
    )


def run_trace(stack: DemoStack, rec: DemoRecord, duration: float, view: LiveView) -> None:
    """Drive the phases through /control and sample once a second until ``duration`` has passed."""
    sampler = Sampler()
    t0 = time.monotonic()
    current_rate: float | None = None
    tick = 0
    while True:
        t = time.monotonic() - t0
        if t >= duration:
            break
        phase = phase_at(rec.phases, t)
        if phase.rate != current_rate:
            stack.set_rate(phase.rate)
            current_rate = phase.rate
        stack.check_running()
        try:
            wp: dict[str, Any] | None = stack.read_pool()
        except Exception:  # a slow API server must not end the demo; the sample just lacks status
            wp = None
        sample, marks = sampler.make(t, stack.sim_state(), wp)
        rec.samples.append(sample)
        rec.marks.extend(marks)
        view.update(sample, phase, rec.marks, rec.samples, marks)
        tick += 1
        time.sleep(max(0.0, t0 + tick - time.monotonic()))


def _print_summary(stream: TextIO, summary_md: str, explain: str | None, out: Path) -> None:
    stream.write("\n" + summary_md)
    if explain:
        stream.write(f"\n$ chanscale explain {NAMESPACE}/{POOL}\n{explain}\n")
    stream.write(
        f"\nWrote {out / 'demo.png'}, {out / 'summary.md'} and {out / 'samples.json'} "
        f"(component logs in {out / 'logs'}).\n"
    )


def main(args: argparse.Namespace) -> int:
    """Entry point of ``chanscale demo``; returns the exit code (0 ok, 1 failure, 2 missing tools, 130 Ctrl-C)."""
    out = Path(args.out)
    kubeconfig = Path(args.kubeconfig).expanduser() if getattr(args, "kubeconfig", None) else None
    duration = float(args.duration)
    real = bool(getattr(args, "real", False))
    tui = not args.no_tui and sys.stdout.isatty() and os.environ.get("TERM", "") != "dumb"
    stream = sys.stdout
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    problem = _check_args(duration, real, kubeconfig)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    sc = Scenario()
    rec = DemoRecord(
        slo_p99=sc.slo_p99,
        max_backlog=sc.max_backlog,
        phases=bursty_trace(duration, sc),
        pool=f"{NAMESPACE}/{POOL}",
        policy_parameters=sc.policy_parameters,
    )
    stack = DemoStack(out=out, scenario=sc, kubeconfig=kubeconfig, real=real, say=lambda m: print(m, flush=True))
    print(
        f"chanscale demo: {duration:.0f}s of bursty load on {NAMESPACE}/{POOL}"
        + (" (NATS JetStream, Go SDK workers) " if real else " ")
        + f"(SLO P99 {sc.slo_p99:g}s, policy step limit +{sc.step_up}/-{sc.step_down} per decision)",
        flush=True,
    )
    code, explain = _run(stack, rec, duration, LiveView(stream, tui, duration, sc.slo_p99))
    if len(rec.samples) >= 2:
        _png, md, _data, _summary = write_outputs(rec, out)
        _print_summary(stream, md.read_text(encoding="utf-8"), explain, out)
        if kubeconfig is not None:
            print(f"The demo objects stay in your cluster; remove them with `kubectl delete namespace {NAMESPACE}`.")
    elif code == 0:
        code = 1
    return code


def _check_args(duration: float, real: bool, kubeconfig: Path | None) -> str | None:
    """What is wrong with the arguments or the machine, before anything starts (None: nothing)."""
    if duration < 20:
        return "--duration must be at least 20 seconds (the operator needs a few ticks per phase)"
    if real and kubeconfig is not None:
        return (
            "--real runs the workers as local processes for the local control plane; on a cluster, apply "
            "examples/nats/jetstream.yaml instead (docs/sdk.md)"
        )
    if kubeconfig is not None and not kubeconfig.is_file():
        return f"--kubeconfig {kubeconfig} does not exist"
    try:
        check_binaries(external_cluster=kubeconfig is not None, real=real)
    except DemoError as e:
        return str(e)
    return None


def _run(stack: DemoStack, rec: DemoRecord, duration: float, view: LiveView) -> tuple[int, str | None]:
    """Start everything, play the trace, stop everything whatever happens: (exit code, the explain text)."""
    code, explain = 0, None
    with _sigterm_as_interrupt():
        try:
            stack.start()
            print("  waiting for the operator's first decision ...", flush=True)
            wait_for_first_decision(stack)
            print(
                f"  all up in {sum(stack.timings.values()):.0f}s; load trace: "
                + ", ".join(f"{p.label} {p.rate:g}/s @{p.start:.0f}s" for p in rec.phases)
                + "\n",
                flush=True,
            )
            view.start()
            try:
                run_trace(stack, rec, duration, view)
            finally:
                view.close()
            explain = _explain(stack)
        except KeyboardInterrupt:
            rec.interrupted = True
            code = 130
            print("\ninterrupted: stopping everything ...", file=sys.stderr, flush=True)
        except DemoError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 1
        except Exception as e:
            print(f"error: the demo failed: {e}", file=sys.stderr)
            _dump_logs(stack)
            code = 1
        finally:
            with _uninterruptible():
                print("stopping the operator, simulator, Prometheus and the control plane ...", flush=True)
                stack.stop()
    return code, explain


def _explain(stack: DemoStack) -> str | None:
    from .explain import explain_text

    try:
        return explain_text(stack.read_pool())
    except Exception as e:
        return f"(could not read the WorkerPool: {e})"


def _dump_logs(stack: DemoStack) -> None:
    for name, proc in (("operator", stack.operator), ("simulator", stack.sim)):
        if proc is not None and proc.proc is not None:
            print(f"--- {name} log tail ({proc.proc.log_path}) ---\n{proc.proc.log_tail(30)}", file=sys.stderr)
