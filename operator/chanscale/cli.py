"""The ``chanscale`` command: ``run`` (the operator), ``explain`` (why did it scale?), ``sim`` (channel
simulator exporter), ``demo`` (the local demo)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import GROUP, PLURAL, VERSION, __version__, promauth
from .explain import explain_text
from .promauth import PrometheusAuth
from .tenancy import Guardrails, parse_duration, parse_profiles


def _run(args: argparse.Namespace) -> int:
    from .memprof import start_from_env, start_gclog_from_env, start_gctypes_from_env

    start_from_env()  # before kopf is imported, so its allocations are traced too (opt-in, for benchmarks)
    start_gclog_from_env()
    start_gctypes_from_env()
    if args.kubeconfig:
        # Before kopf (and the kubernetes client it imports) read it: the client fixes its default kubeconfig
        # path at import time, and kopf's login handler loads that default.
        os.environ["KUBECONFIG"] = args.kubeconfig
        import kubernetes.config.kube_config as kube_config

        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = args.kubeconfig
    import kopf

    from . import telemetry
    from .handlers import build_registry
    from .reconcile import Config

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf logs every successful timer run at INFO; our decisions are in status, Events and /metrics.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    from .kube import load_client_config

    load_client_config(args.kubeconfig)
    config = Config(
        prometheus_url=args.prometheus_url,
        opa=args.opa_url or args.opa,
        tick=args.tick,
        status_refresh=args.status_refresh,
        policy_timeout=args.policy_timeout,
        policy_peers=args.policy_peers,
        health_url=args.liveness or None,
        stale_intervals=args.stale_intervals,
        guardrails=guardrails_from_args(args),
        prometheus_auth=prometheus_auth_from_args(args),
    )
    telemetry.serve(args.metrics_port, args.metrics_addr)
    registry = build_registry(
        config,
        scheduler=args.scheduler,
        elector=elector_from_args(args),
        fast_period=args.fast_path_period,
        direct_settings=direct_from_args(args),
    )
    namespaces = args.namespace or []
    kopf.run(
        registry=registry,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=None,  # chanscale serves /healthz and /readyz itself (chanscale.health)
    )
    return 0


def direct_from_args(args: argparse.Namespace) -> Any:
    """The direct path's settings with --direct-metrics (docs/direct-metrics.md), else None."""
    if not args.direct_metrics:
        return None
    if args.fast_path_period <= 0 or args.scheduler != "ticker":
        raise SystemExit("chanscale run: --direct-metrics needs the fast path (--fast-path-period > 0, the ticker)")
    if not 0 < args.direct_metrics_timeout < args.direct_metrics_period:
        raise SystemExit("chanscale run: need 0 < --direct-metrics-timeout < --direct-metrics-period")
    from .handlers import DirectSettings

    return DirectSettings(period=args.direct_metrics_period, timeout=args.direct_metrics_timeout)


def elector_from_args(args: argparse.Namespace) -> Any:
    """A Lease elector with --leader-elect or --shards > 1 (docs/scaling.md), else None."""
    if not args.leader_elect and args.shards <= 1:
        return None
    if not args.lease_duration > args.renew_deadline > args.retry_period > 0:
        raise SystemExit("chanscale run: need --lease-duration > --renew-deadline > --retry-period > 0")
    from .leader import Elector, KubeLeaseStore

    return Elector(
        KubeLeaseStore(args.lease_namespace or _own_namespace()),
        name=args.lease_name,
        shards=max(1, args.shards),
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
    )


def _own_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip()
    except OSError:
        return "default"


def _add_election_flags(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("high availability (coordination.k8s.io Leases; docs/scaling.md)")
    g.add_argument(
        "--leader-elect",
        action="store_true",
        default=os.environ.get("CHANSCALE_LEADER_ELECT", "") == "true",
        help="run several replicas: only the holder of the Lease evaluates pools, the others are hot standbys",
    )
    g.add_argument(
        "--shards",
        type=int,
        default=int(os.environ.get("CHANSCALE_SHARDS", "1")),
        help="spread pools over replicas: pool -> crc32(namespace/name) %% N, one Lease per shard (implies "
        "--leader-elect)",
    )
    g.add_argument("--lease-name", default="chanscale", help="the Lease (with --shards: the Leases' prefix)")
    g.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="namespace of the Leases (default: $POD_NAMESPACE, else the service account's namespace)",
    )
    g.add_argument("--lease-duration", type=float, default=10.0, help="seconds a Lease lasts without renewal")
    g.add_argument("--renew-deadline", type=float, default=7.0, help="stop acting this long after the last renewal")
    g.add_argument("--retry-period", type=float, default=2.0, help="seconds between election rounds")


def guardrails_from_args(args: argparse.Namespace) -> Guardrails:
    """The admin's guardrails from `chanscale run` flags (the Helm chart sets them from its values)."""
    try:
        return Guardrails(
            profiles=parse_profiles(args.policy_profile or []),
            failure_policy=args.failure_policy,
            prometheus_allowlist=tuple(args.prometheus_allowed_url or ()),
            custom_queries=args.allow_custom_queries,
            scrape_interval_seconds=parse_duration(args.scrape_interval) if args.scrape_interval else 0.0,
            template_namespaces=frozenset(args.template_namespace or ()),
            scale_kinds=frozenset(args.scale_kind or ()),
        )
    except ValueError as e:
        raise SystemExit(f"chanscale run: {e}") from e


def prometheus_auth_from_args(args: argparse.Namespace) -> PrometheusAuth:
    """The operator's Prometheus credentials from `chanscale run` flags (the chart mounts the Secrets)."""
    try:
        return promauth.from_args(args)
    except promauth.AuthConfigError as e:
        raise SystemExit(f"chanscale run: {e}") from e


def _add_prometheus_auth_flags(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("Prometheus authentication (the operator's own; pools cannot set it: docs/security.md)")
    env = os.environ.get
    g.add_argument(
        "--prometheus-bearer-token-file",
        default=env("CHANSCALE_PROMETHEUS_BEARER_TOKEN_FILE"),
        metavar="PATH",
        help="send 'Authorization: Bearer <file content>'; re-read when the file changes (a mounted Secret)",
    )
    g.add_argument(
        "--prometheus-basic-auth-user",
        default=env("CHANSCALE_PROMETHEUS_BASIC_AUTH_USER"),
        help="basic auth user (with --prometheus-basic-auth-password-file)",
    )
    g.add_argument(
        "--prometheus-basic-auth-password-file",
        default=env("CHANSCALE_PROMETHEUS_BASIC_AUTH_PASSWORD_FILE"),
        metavar="PATH",
    )
    g.add_argument(
        "--prometheus-ca-file",
        default=env("CHANSCALE_PROMETHEUS_CA_FILE"),
        metavar="PATH",
        help="PEM CA bundle that verifies Prometheus' TLS certificate (default: the system CAs)",
    )
    g.add_argument(
        "--prometheus-cert-file",
        default=env("CHANSCALE_PROMETHEUS_CERT_FILE"),
        metavar="PATH",
        help="PEM client certificate for mutual TLS (with --prometheus-key-file)",
    )
    g.add_argument("--prometheus-key-file", default=env("CHANSCALE_PROMETHEUS_KEY_FILE"), metavar="PATH")
    g.add_argument(
        "--prometheus-header",
        action="append",
        metavar="NAME=VALUE",
        help="an extra request header, e.g. X-Scope-OrgID=team-a for Mimir/Cortex/Thanos (repeatable)",
    )


def _add_guardrail_flags(r: argparse.ArgumentParser) -> None:
    g = r.add_argument_group("guardrails (the cluster admin's choices; docs/security.md)")
    g.add_argument(
        "--policy-profile",
        action="append",
        metavar="NAME=PATH",
        help="publish a policy profile pools may choose with spec.policy.profile (repeatable); "
        "'default' is chanscale/main/decision unless redefined",
    )
    g.add_argument(
        "--failure-policy",
        choices=["Hold", "Allow"],
        default="Hold",
        help="when OPA cannot answer: Hold keeps the replicas, Allow lets the change through within min/max",
    )
    g.add_argument(
        "--prometheus-allowed-url",
        action="append",
        metavar="URL",
        help="a Prometheus a pool may name in spec.metrics.prometheusAddress (repeatable; --prometheus-url is "
        "always allowed, any other address is refused)",
    )
    g.add_argument(
        "--allow-custom-queries",
        action="store_true",
        help="let pools set spec.metrics.queries; each query must confine every selector to the pool's namespace",
    )
    g.add_argument(
        "--scrape-interval",
        default=os.environ.get("CHANSCALE_SCRAPE_INTERVAL", ""),
        help="Prometheus' scrape interval (e.g. 30s): a pool's rateWindow below two intervals is refused",
    )
    g.add_argument(
        "--scale-kind",
        action="append",
        metavar="KIND.GROUP",
        help="a kind with a /scale subresource pools may target besides Deployments, e.g. StatefulSet.apps or "
        "Rollout.argoproj.io (repeatable; needs the chart's rbac.scaleTargets for get/patch on its /scale)",
    )
    g.add_argument(
        "--template-namespace",
        action="append",
        metavar="NAMESPACE",
        help="a namespace where pools with spec.template may create and own a Deployment (repeatable; '*' for all; "
        "needs the chart's template-mode RBAC there). Elsewhere template pools are refused",
    )


def _explain(args: argparse.Namespace) -> int:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from .kube import load_client_config

    if "/" not in args.pool:
        print("error: name the pool as <namespace>/<name>", file=sys.stderr)
        return 2
    ns, name = args.pool.split("/", 1)
    load_client_config(args.kubeconfig)
    try:
        wp: dict[str, Any] = client.CustomObjectsApi().get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, ns, PLURAL, name
        )
    except ApiException as e:
        print(f"error: cannot read WorkerPool {ns}/{name}: {e.status} {e.reason}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(wp.get("status") or {}, indent=2))
        return 0
    print(explain_text(wp))
    if args.compare:
        from .adoption import compare_text

        print(compare_text(wp.get("status") or {}))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    """KEDA ScaledObjects (YAML files or '-' for stdin) -> WorkerPools on stdout, notes as comments."""
    import yaml

    from .migrate import MigrateError, Options, migrate, report

    opts = Options(p99_seconds=args.p99, service_rate=args.service_rate, channel=args.channel, active=args.active)
    docs: list[Any] = []
    for path in args.files:
        with sys.stdin if path == "-" else open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    objects = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ScaledObject"]
    if not objects:
        print("error: no ScaledObject in the input", file=sys.stderr)
        return 2
    rc = 0
    out = []
    for so in objects:
        try:
            m = migrate(so, opts)
        except MigrateError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 1
            continue
        out.append(report(m) + "\n" + yaml.safe_dump(m.pool, sort_keys=False))
    print("---\n".join(out), end="")
    return rc


def _sim(args: argparse.Namespace) -> int:
    from .sim.exporter import main as sim_main

    return sim_main(args)


def _demo(args: argparse.Namespace) -> int:
    try:
        from .demo import main as demo_main
    except ImportError as e:  # the operator image leaves the demo out (it is the `demo` extra's)
        print(f"error: the demo is not available here ({e}): pip install 'chanscale[demo]'", file=sys.stderr)
        return 1
    return demo_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chanscale", description=__doc__)
    p.add_argument("--version", action="version", version=f"chanscale {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    _add_run_parser(sub)
    _add_explain_parser(sub)
    _add_migrate_parser(sub)
    _add_sim_parser(sub)
    _add_demo_parser(sub)
    return p


def _add_run_parser(sub: Any) -> None:
    """`chanscale run`: connection, the loop, endpoints, guardrails, Prometheus auth."""
    r = sub.add_parser("run", help="run the operator (a thin wrapper over `kopf run`)")
    r.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable; globs ok)")
    r.add_argument("--all-namespaces", "-A", action="store_true", help="watch the whole cluster (the default)")
    r.add_argument("--standalone", action="store_true", help="no peering: run as the only operator instance")
    r.add_argument("--peering", default="chanscale", help="kopf peering object name (ignored with --standalone)")
    r.add_argument("--priority", type=int, default=0, help="peering priority of this instance")
    r.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="kubeconfig (default: in-cluster/KUBECONFIG)",
    )
    r.add_argument(
        "--prometheus-url",
        default=os.environ.get("CHANSCALE_PROMETHEUS_URL"),
        help="default Prometheus for pools without spec.metrics.prometheusAddress",
    )
    r.add_argument("--opa-url", default=os.environ.get("CHANSCALE_OPA_URL"), help="OPA server URL for the policy gate")
    r.add_argument(
        "--opa",
        default=os.environ.get("CHANSCALE_OPA", "local"),
        help="without --opa-url: 'local' supervises an `opa run --server` child with the packaged "
        "policies, 'none' disables the gate (default: local)",
    )
    _add_loop_flags(r)
    _add_endpoint_flags(r)
    r.add_argument("--verbose", "-v", action="store_true")
    _add_guardrail_flags(r)
    _add_prometheus_auth_flags(r)
    r.set_defaults(func=_run)


def _add_loop_flags(r: argparse.ArgumentParser) -> None:
    """The evaluation loop: tick, status refresh, election, fast and direct paths, scheduler, policy timeout."""
    r.add_argument(
        "--tick",
        type=float,
        default=float(os.environ.get("CHANSCALE_TICK", "10")),
        help="seconds between evaluations (a pool's pollingInterval is honoured on top)",
    )
    r.add_argument(
        "--status-refresh",
        type=float,
        default=300.0,
        help="rewrite a status whose decision, conditions and learning have not moved at most this often, seconds "
        "(a material change or moved learning is written at once: docs/decision-model.md)",
    )
    _add_election_flags(r)
    r.add_argument(
        "--fast-path-period",
        type=float,
        default=float(os.environ.get("CHANSCALE_FAST_PATH_PERIOD", "1")),
        help="seconds between polls of every pool's backlog and arrival rate (two shared queries); a pool whose "
        "signal moves materially is evaluated at once instead of at its next tick (0 disables)",
    )
    r.add_argument(
        "--direct-metrics",
        action="store_true",
        default=os.environ.get("CHANSCALE_DIRECT_METRICS") == "1",
        help="the opt-in direct path: watch pods labelled chanscale.dev/direct-metrics=true and read the backlog "
        "of pools with spec.metrics.direct.enabled from a sample of their pods' /metrics (docs/direct-metrics.md)",
    )
    r.add_argument("--direct-metrics-period", type=float, default=2.0, help="seconds between direct readings of a pool")
    r.add_argument("--direct-metrics-timeout", type=float, default=0.5, help="seconds per pod /metrics request")
    r.add_argument(
        "--scheduler",
        choices=["ticker", "timers"],
        default="ticker",
        help="ticker: one task evaluates all pools, each at a stable phase of the tick (default); timers: a kopf "
        "timer per pool (the former design, kept for comparison; docs/scaling.md)",
    )
    r.add_argument("--policy-timeout", type=float, default=2.0, help="seconds per policy evaluation")
    r.add_argument(
        "--policy-peers",
        choices=["auto", "list", "summary"],
        default=os.environ.get("CHANSCALE_POLICY_PEERS", "auto"),
        help="whether policy calls carry the namespace's pool list, input.namespace.pools (input.namespace.others, "
        "the sums, always goes): auto (when a loaded policy reads it), list (always), summary (never); "
        "docs/policies.md",
    )


def _add_endpoint_flags(r: argparse.ArgumentParser) -> None:
    """The operator's own /metrics and health endpoints."""
    r.add_argument("--metrics-port", type=int, default=8080, help="port of the operator's /metrics (0 disables)")
    r.add_argument("--metrics-addr", default="0.0.0.0", help="address of the operator's /metrics")
    r.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL; /readyz is served on the same host:port ('' disables both)",
    )
    r.add_argument(
        "--stale-intervals",
        type=float,
        default=3.0,
        help="liveness fails when a pool has not been evaluated for this many ticks",
    )


def _add_explain_parser(sub: Any) -> None:
    """`chanscale explain`: why did it scale?"""
    e = sub.add_parser("explain", help="why did it scale? print a pool's last decision")
    e.add_argument("pool", help="<namespace>/<name>")
    e.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    e.add_argument("-o", "--output", choices=["text", "json"], default="text")
    e.add_argument(
        "--compare",
        action="store_true",
        help="a DryRun pool beside another autoscaler: its decisions beside the replicas that autoscaler set",
    )
    e.set_defaults(func=_explain)


def _add_migrate_parser(sub: Any) -> None:
    """`chanscale migrate`: KEDA ScaledObjects into WorkerPools."""
    m = sub.add_parser(
        "migrate",
        help="turn KEDA ScaledObjects into WorkerPools (DryRun by default: shadow the ScaledObject first)",
    )
    m.add_argument("files", nargs="+", help="YAML files with ScaledObjects ('-' reads stdin, e.g. kubectl get -o yaml)")
    m.add_argument("--p99", type=float, help="the latency objective, seconds (spec.slo.p99LatencySeconds)")
    m.add_argument(
        "--service-rate",
        type=float,
        help="messages/s one worker handles: sets spec.model.serviceRateHint and, without --p99, turns the "
        "trigger's per-replica threshold into the objective (threshold / rate)",
    )
    m.add_argument("--channel", help="the channel label (default: the trigger's topic/stream/list)")
    m.add_argument("--active", action="store_true", help="mode Active instead of DryRun (delete the ScaledObject)")
    m.set_defaults(func=_migrate)


def _add_sim_parser(sub: Any) -> None:
    """`chanscale sim`: the channel simulator."""
    s = sub.add_parser("sim", help="channel simulator: serves the metrics contract for simulated channels")
    s.add_argument("--config", required=True, help="YAML file listing the channels (see docs/simulator.md)")
    s.add_argument("--listen", default="127.0.0.1:9400", help="host:port of /metrics and /control")
    s.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG"),
        help="read worker counts from these Deployments (omit to use the config's fixed replicas)",
    )
    s.add_argument(
        "--replicas-from",
        choices=["spec", "ready"],
        default="spec",
        help="count workers from spec.replicas (no kubelet) or status.readyReplicas",
    )
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=_sim)


def _add_demo_parser(sub: Any) -> None:
    """`chanscale demo`: the local demo."""
    d = sub.add_parser("demo", help="the local demo: control plane, Prometheus, OPA, operator and a bursty channel")
    d.add_argument("--kubeconfig", help="use this cluster instead of starting the local control plane")
    d.add_argument("--duration", type=float, default=240.0, help="seconds of simulated load")
    d.add_argument("--out", default="out/demo", help="directory for the plot and the summary")
    d.add_argument("--no-tui", action="store_true", help="plain log lines instead of the live view")
    d.add_argument(
        "--real",
        action="store_true",
        help="the channel on a real broker: nats-server (JetStream), the Go SDK example worker and load generator as "
        "local processes, one worker per replica (docs/sdk.md); needs Go and `hack/tools.sh nats-server`",
    )
    d.set_defaults(func=_demo)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
