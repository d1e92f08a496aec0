"""Session fixtures for integration tests: a real control plane, Prometheus and the operator on 127.0.0.1.

One control plane and one Prometheus serve the whole test run (start-up is paid once); every test gets its own
namespace, so tests cannot see each other's objects. A missing binary *fails* the tests that need it with a message
saying to run `make tools` - integration tests never skip.

Fixtures:
    control_plane      LocalControlPlane with crds/ applied (session)
    kubeconfig         Path of its admin kubeconfig (session)
    kubectl            Kubectl helper: kubectl("get", "wp", "-n", ns) -> CompletedProcess (session)
    k8s                kubernetes.client.ApiClient for the cluster (session)
    namespace          a fresh namespace for this test, deleted afterwards (function)
    prometheus         LocalPrometheus scraping every 1 s (session)
    prometheus_targets add scrape targets that are removed again after the test (function)
    operator_process   factory starting `python -m chanscale run ...`; its log is attached to a failing test's
                       report and it is stopped after the test (function)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chanscale.local.binaries import REPO_ROOT, BinaryNotFound
from chanscale.local.cluster import LocalControlPlane
from chanscale.local.harness import (
    Kubectl,
    OperatorFactory,
    OperatorProcess,
    PrometheusTargets,
    SimFactory,
    SimProcess,
)
from chanscale.local.prometheus import LocalPrometheus

CRD_DIR = REPO_ROOT / "crds"
CRD_NAME = "workerpools.chanscale.dev"

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_OPERATORS = pytest.StashKey[list["OperatorProcess"]]()
_SIMS = pytest.StashKey[list["SimProcess"]]()
_TIMINGS = pytest.StashKey[list[str]]()


# ------------------------------------------------------------------------------------------- reporting hooks
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember each phase's report and attach the operator's log to a failing test's report.

    Done here rather than in fixture teardown because the report is written before teardown runs, and a log in
    the report is shown next to the failure where it is read.
    """
    rep: pytest.TestReport = yield
    item.stash.setdefault(_REPORTS, {})[rep.when] = rep
    if rep.failed:
        for op in item.stash.get(_OPERATORS, []):
            rep.sections.append((f"chanscale operator log ({op.name}, {rep.when})", _tail(op.log_text(), op.log_path)))
        for sim in item.stash.get(_SIMS, []):
            rep.sections.append((f"chanscale sim log ({sim.name}, {rep.when})", _tail(sim.log_text(), None)))
    return rep


def _tail(text: str, path: Path | None, lines: int = 300) -> str:
    """The end of a log: a verbose operator writes megabytes in a minute; the end is where the failure is."""
    all_lines = text.splitlines()
    if len(all_lines) <= lines:
        return text or "<empty>"
    where = f" (full log: {path})" if path else ""
    return f"... {len(all_lines) - lines} earlier lines omitted{where} ...\n" + "\n".join(all_lines[-lines:])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the measured start-up times, so docs/testing.md's numbers can be checked on any machine."""
    lines = config.stash.get(_TIMINGS, [])
    if lines:
        terminalreporter.section("chanscale local cluster")
        for line in lines:
            terminalreporter.write_line(line)


def _fail_missing(exc: BinaryNotFound) -> None:
    pytest.fail(f"{exc}\nIntegration tests need the real binaries: run `make tools`.", pytrace=False)


# ---------------------------------------------------------------------------------------------- control plane
@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[LocalControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager for the whole run, with the WorkerPool CRD applied."""
    cp = LocalControlPlane()
    try:
        cp.start()
    except BinaryNotFound as exc:
        _fail_missing(exc)
    try:
        applied = cp.kubectl("apply", "-f", str(CRD_DIR))
        assert applied.returncode == 0, f"kubectl apply -f crds/ failed:\n{applied.stderr}"
        try:
            cp.wait_established(CRD_NAME)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from exc
        request.config.stash.setdefault(_TIMINGS, []).append(cp.timings.summary())
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: LocalControlPlane) -> Path:
    """The admin kubeconfig (client certificate in system:masters)."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane: LocalControlPlane) -> Kubectl:
    return Kubectl(control_plane)


@pytest.fixture(scope="session")
def k8s(control_plane: LocalControlPlane) -> Iterator[Any]:
    """A kubernetes python client ApiClient (admin); use it with e.g. ``client.AppsV1Api(k8s)``."""
    api = control_plane.api_client()
    try:
        yield api
    finally:
        api.close()


def _namespace_name(node_name: str) -> str:
    """A DNS-1123 label derived from the test name (readable in logs) plus a random suffix (unique)."""
    stem = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-") or "t"
    return f"{stem}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, control_plane: LocalControlPlane, kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace for this test; deleted afterwards (without waiting: the namespace controller finishes)."""
    control_plane.check_running()  # a dead component fails here with its log, not later as a puzzling timeout
    name = _namespace_name(request.node.name)
    created = kubectl("create", "namespace", name)
    assert created.returncode == 0, f"could not create namespace {name}: {created.stderr}"
    kubectl("label", "namespace", name, "chanscale.dev/test=true")
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


# ------------------------------------------------------------------------------------------------- prometheus
@pytest.fixture(scope="session")
def prometheus(request: pytest.FixtureRequest) -> Iterator[LocalPrometheus]:
    """One Prometheus (scrape interval 1 s) for the run; add targets with ``prometheus_targets``."""
    prom = LocalPrometheus(scrape_interval="1s")
    try:
        prom.start()
    except BinaryNotFound as exc:
        _fail_missing(exc)
    request.config.stash.setdefault(_TIMINGS, []).append(f"prometheus ready in {prom.startup_seconds:.1f}s")
    try:
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def prometheus_targets(prometheus: LocalPrometheus) -> Iterator[PrometheusTargets]:
    targets = PrometheusTargets(prometheus)
    try:
        yield targets
    finally:
        targets.cleanup()


# -------------------------------------------------------------------------------------------------- operator


@pytest.fixture
def operator_process(
    request: pytest.FixtureRequest, kubeconfig: Path, prometheus: LocalPrometheus, tmp_path: Path
) -> Iterator[OperatorFactory]:
    """Factory: ``operator_process(namespaces=[ns], opa="none")`` starts `python -m chanscale run --standalone`.

    Arguments: ``namespaces`` (default: all namespaces), ``opa`` ("none", "local" or an http URL),
    ``prometheus_url`` (default: the session Prometheus), ``kubeconfig_path`` (default: admin; pass a token
    kubeconfig to run with a ServiceAccount's RBAC), ``tick`` (1), ``extra_args``, ``env`` (overrides; None
    unsets), ``wait`` (wait for liveness, default True). Every operator started is stopped after the test; a
    failing test's report carries each operator's log.
    """
    started: list[OperatorProcess] = []
    request.node.stash[_OPERATORS] = started

    def start(
        namespaces: Sequence[str] | None = None,
        opa: str = "none",
        prometheus_url: str | None = None,
        kubeconfig_path: Path | None = None,
        tick: float = 1,
        extra_args: Sequence[str] = (),
        env: dict[str, str | None] | None = None,
        wait: bool = True,
    ) -> OperatorProcess:
        name = f"operator-{len(started) + 1}"
        op = OperatorProcess.local(
            name,
            tmp_path / f"{name}.log",
            kubeconfig_path or kubeconfig,
            prometheus_url or prometheus.url,
            opa=opa,
            namespaces=namespaces or (),
            tick=tick,
            extra_args=["--verbose", *extra_args],
            env=env,
        )
        started.append(op)
        op.start()
        if wait:
            op.wait_healthy()
        return op

    try:
        yield start
    finally:
        for op in started:
            op.stop()


@pytest.fixture
def channel_sim(
    request: pytest.FixtureRequest, kubeconfig: Path, prometheus_targets: PrometheusTargets, tmp_path: Path
) -> Iterator[SimFactory]:
    """Factory: ``channel_sim([{"namespace": ns, "channel": "orders", "deployment": "worker", "serviceRate": 20,
    "arrivalRate": 10}])`` starts `chanscale sim` (workers = the Deployment's spec.replicas), registers it with
    the session Prometheus and waits until it has been scraped. Stopped and unregistered after the test."""
    started: list[SimProcess] = []
    request.node.stash[_SIMS] = started

    def start(channels: list[dict[str, Any]], scrape: bool = True) -> SimProcess:
        sim = SimProcess(f"sim-{len(started) + 1}", channels, tmp_path, kubeconfig)
        started.append(sim)
        sim.start()
        if scrape:
            prometheus_targets.add(sim.address)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()
