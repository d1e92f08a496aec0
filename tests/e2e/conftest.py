"""Fixtures of the kind e2e suite: the cluster, Prometheus and the chart, all for real; nothing skips.

The session brings the cluster up through hack/e2e-cluster.sh (Docker installed and started if needed, images
built offline or reused from the cache, loaded into the node), installs the e2e Prometheus and the chart with
``helm upgrade --install`` and runs ``helm test``. A missing prerequisite fails the session naming it and the fix
(`make e2e`); the suite never skips, so CI cannot pass without running it. See tests/e2e/stack.py for the
environment knobs (CHANSCALE_E2E_KEEP=1 keeps the cluster and the release for the next run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kindstack import E2EError, KindStack, bring_up
from kindtest import clean
from scenario import KubectlCluster


def _reporter_log(config: pytest.Config) -> Callable[[str], None]:
    """Write progress lines to the terminal even while pytest captures output."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def log(line: str) -> None:
        if reporter is not None:
            reporter.write_line(line)
        else:  # pragma: no cover - pytest without its terminal plugin
            print(line, flush=True)

    return log


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Iterator[KindStack]:
    """The cluster with Prometheus and the chart installed and ``helm test`` passed; deleted afterwards unless
    CHANSCALE_E2E_KEEP=1."""
    st = KindStack(log=_reporter_log(pytestconfig))
    try:
        bring_up(st)
        st.helm_test()
    except E2EError as e:
        pytest.fail(f"e2e setup failed (run `make e2e`, which brings everything up):\n{e}", pytrace=False)
    try:
        yield st
    finally:
        st.log("[e2e] setup stages: " + ", ".join(f"{k.removeprefix('e2e: ')} {v:.0f}s" for k, v in st.timings.items()))
        if not st.keep:
            with st.stage("e2e: delete cluster"):
                st.down()


@pytest.fixture(scope="session")
def kubectl(stack: KindStack) -> Callable[..., Any]:
    """``kubectl(*args, input=None)`` -> CompletedProcess, with the kind kubeconfig (scenario.py's call shape)."""
    return stack.kubectl


@pytest.fixture(scope="session")
def cluster(kubectl: Callable[..., Any]) -> KubectlCluster:
    return KubectlCluster(kubectl)


@pytest.fixture
def workspace(stack: KindStack) -> Iterator[Callable[[str], str]]:
    """``workspace(ns)`` empties a pre-created e2e namespace now and again after the test (kindtest.clean)."""
    used: list[str] = []

    def use(ns: str) -> str:
        clean(stack, ns)
        used.append(ns)
        return ns

    yield use
    for ns in used:
        clean(stack, ns)
