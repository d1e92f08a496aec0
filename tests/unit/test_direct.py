"""The opt-in direct path: sampling, parsing, the pod index, merging into the decision, and never bad data."""

from __future__ import annotations

import random
from typing import Any

import pytest
from chanscale_sdk import ChannelMetrics  # sdk/python is on pytest's pythonpath
from prometheus_client import CollectorRegistry, generate_latest
from test_reconcile import TARGET, Prom, cond, pool, runtime

from chanscale import direct
from chanscale.direct import DirectError, DirectPath, Reading, merge, parse_backlog, pod_entry, sample_size
from chanscale.fastpath import FastPath, direct_refusal
from chanscale.reconcile import tick
from chanscale.signals import PrometheusReader

pytestmark = pytest.mark.unit


def test_sample_size_is_the_kpas() -> None:
    assert [sample_size(n) for n in (0, 1, 2, 3)] == [0, 1, 2, 3]
    assert sample_size(10) == 7  # ceil(10 · 15.37 / 24.37)
    assert sample_size(100) == 14
    assert sample_size(10_000) == 16  # bounded: the unbounded-population size, rounded up
    assert all(sample_size(n) <= n for n in range(200))


_REGISTRIES: list[CollectorRegistry] = []  # kept alive: the SDK finds a registry's collector by its id


def _exposition(backlog: float, channel: str = "orders", namespace: str | None = None) -> str:
    reg = CollectorRegistry()
    _REGISTRIES.append(reg)
    m = ChannelMetrics(channel, namespace=namespace, registry=reg)
    m.add_backlog(lambda: backlog)
    return generate_latest(reg).decode()


def test_parse_reads_the_sdks_backlog_for_the_channel_only() -> None:
    text = _exposition(12.0) + _exposition(99.0, channel="other")
    assert parse_backlog(text, "orders") == 12.0
    assert parse_backlog(_exposition(3.0, namespace="someone-else"), "orders") == 3.0  # the pod's namespace rules


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (_exposition(5.0, channel="other"), "no chanscale_channel_backlog series"),
        ('chanscale_channel_backlog{channel="orders"} NaN\n', "is nan"),  # the SDK's "source cannot answer"
        ('chanscale_channel_backlog{channel="orders"} -1\n', "is -1"),
        ("chanscale_channel_backlog{channel= garbage\n", "unparsable"),
    ],
)
def test_parse_refuses_bad_data(text: str, why: str) -> None:
    with pytest.raises(DirectError, match=why) as err:
        parse_backlog(text, "orders")
    assert err.value.reason == direct.BAD_DATA


def _pod(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": "worker-6f7d9-abcde",
            "labels": {direct.LABEL: "true", "pod-template-hash": "6f7d9"},
            "ownerReferences": [{"kind": "ReplicaSet", "name": "worker-6f7d9", "controller": True}],
            "annotations": {},
        },
        "spec": {"containers": [{"name": "w", "ports": [{"name": direct.PORT_NAME, "containerPort": 9400}]}]},
        "status": {"podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    for path, value in over.items():
        section, key = path.split("__")
        body[section][key] = value
    return body


def test_pod_entry_indexes_ready_labelled_pods_by_their_deployment() -> None:
    assert pod_entry(_pod()) == (("ns", "worker"), {"pod": "worker-6f7d9-abcde", "ip": "10.0.0.7", "port": 9400})
    by_annotation = _pod(spec__containers=[{"name": "w"}], metadata__annotations={direct.PORT_ANNOTATION: "9500"})
    assert pod_entry(by_annotation) == (("ns", "worker"), {"pod": "worker-6f7d9-abcde", "ip": "10.0.0.7", "port": 9500})


@pytest.mark.parametrize(
    "over",
    [
        {"metadata__labels": {"pod-template-hash": "6f7d9"}},  # not labelled
        {"spec__hostNetwork": True},  # its IP would be the node's
        {"status__podIP": "not-an-ip"},
        {"status__podIP": None},
        {"status__conditions": [{"type": "Ready", "status": "False"}]},
        {"metadata__deletionTimestamp": "2026-01-01T00:00:00Z"},
        {"spec__containers": [{"name": "w", "ports": [{"name": "http", "containerPort": 80}]}]},  # no declared port
        {"metadata__annotations": {direct.PORT_ANNOTATION: "99999"}, "spec__containers": []},  # out of range
        {"metadata__ownerReferences": [{"kind": "StatefulSet", "name": "worker", "controller": True}]},
    ],
)
def test_pod_entry_refuses_pods_it_must_not_read(over: dict[str, Any]) -> None:
    assert pod_entry(_pod(**over)) is None


FOUR = 'chanscale_channel_backlog{channel="orders"} 4.0\n'


def _pods(n: int) -> list[dict[str, Any]]:
    return [{"pod": f"w-{i}", "ip": "127.0.0.1", "port": 1000 + i} for i in range(n)]


async def test_read_samples_a_bounded_number_of_pods_and_scales_the_sum() -> None:
    asked: list[int] = []

    async def fetch(ip: str, port: int) -> str:
        asked.append(port)
        return FOUR

    dp = DirectPath(pods=lambda ns, d: _pods(100), fetch=fetch, wall=lambda: 50.0, rng=random.Random(3))
    r = await dp.read(("ns", "pool"), "worker", "orders")
    assert len(asked) == len(set(asked)) == sample_size(100) == r.sampled
    assert r.population == 100 and r.backlog == pytest.approx(400.0)


async def test_one_bad_pod_refuses_the_whole_reading_with_its_reason() -> None:
    async def fetch(ip: str, port: int) -> str:
        if port == 1001:
            raise DirectError(direct.UNREACHABLE, "TimeoutError")
        return FOUR

    dp = DirectPath(pods=lambda ns, d: _pods(3), fetch=fetch, wall=lambda: 50.0)
    r = await dp.read(("ns", "pool"), "worker", "orders")
    assert r.backlog is None and r.reason == direct.UNREACHABLE and "w-1" in r.message
    none = DirectPath(pods=lambda ns, d: [], fetch=fetch, wall=lambda: 50.0)
    assert (await none.read(("ns", "pool"), "worker", "orders")).reason == direct.NO_PODS


def test_merge_uses_only_a_fresh_valid_reading_beside_fresh_prometheus() -> None:
    good = Reading(at=99.0, backlog=300.0, sampled=3, population=3)
    backlog, age, note = merge(good, 20.0, 4.0, 100.0, max_age=6.0, stale_after=60)
    assert (backlog, age, note.used, note.reason) == (300.0, 1.0, True, direct.READ)
    assert not merge(good, 20.0, 4.0, 110.0, 6.0, 60)[2].used  # too old
    assert merge(good, 20.0, 90.0, 100.0, 6.0, 60)[:2] == (20.0, 90.0)  # Prometheus stale: not hidden
    bad = Reading(at=99.0, reason=direct.BAD_DATA, message="pod w-0: HTTP 500")
    backlog, _, note = merge(bad, 20.0, 4.0, 100.0, 6.0, 60)
    assert backlog == 20.0 and note.reason == direct.BAD_DATA and "HTTP 500" in note.message


def test_only_pools_on_the_shared_queries_and_a_deployment_can_opt_in() -> None:
    on = {"channel": "a", "metrics": {"direct": {"enabled": True}}}
    assert direct_refusal(on, "p", "http://p") is None
    custom = {**on, "metrics": {"direct": {"enabled": True}, "queries": {"backlog": "x"}}}
    assert direct_refusal(custom, "p", "http://p").reason == direct.NOT_APPLICABLE  # type: ignore[union-attr]
    other_kind = {**on, "scaleTargetRef": {"kind": "StatefulSet", "name": "s"}}
    assert direct_refusal(other_kind, "p", "http://p").reason == direct.NOT_APPLICABLE  # type: ignore[union-attr]


async def test_a_direct_move_triggers_a_decision_before_prometheus_sees_it() -> None:
    pods_backlog = [5.0]

    async def fetch(ip: str, port: int) -> str:
        return f'chanscale_channel_backlog{{channel="orders"}} {pods_backlog[0]}\n'

    now = [0.0]
    reader = PrometheusReader("http://prom", ttl=0.0, query_fn=Prom(), clock=lambda: now[0])
    triggered: list[tuple[str, str]] = []
    spec = {"channel": "orders", "scaleTargetRef": {"name": "worker"}, "metrics": {"direct": {"enabled": True}}}
    fp = FastPath(reader, "http://prom", pools=lambda: [(("ns", "orders"), spec)], trigger=triggered.append)
    fp.direct = DirectPath(pods=lambda ns, d: _pods(2), fetch=fetch, wall=lambda: now[0], period=2.0)
    await fp.poll_once()
    now[0] += 1.0
    pods_backlog[0] = 200.0
    await fp.poll_once()  # not due yet (1 s < 2 s): no new reading, no trigger
    assert triggered == []
    now[0] += 1.0
    await fp.poll_once()
    assert triggered == [("ns", "orders")]  # Prometheus still says 0


async def test_the_decision_sizes_on_the_pods_backlog_and_says_so() -> None:
    rt = runtime()
    dp = DirectPath(pods=lambda ns, d: [], wall=rt.wall)
    rt.direct = dp
    dp.readings[("ns", "orders")] = Reading(at=rt.wall(), backlog=4000.0, sampled=2, population=4)
    body = pool(metrics={"direct": {"enabled": True}})
    res = await tick(rt, body, TARGET)
    st = res.status
    assert st is not None and st["signals"]["backlog"] == 4000.0 and st["signals"]["backlogSource"] == "pods"
    assert cond(st, "DirectMetrics")["status"] == "True" and cond(st, "DirectMetrics")["reason"] == direct.READ
    assert st["lastDecision"]["sizing"]["driver"] == "drain"  # the policy gate saw it too:
    assert rt.gate.inputs[-1]["signals"]["backlog"] == 4000.0  # type: ignore[attr-defined]
    assert [e[1] for e in res.events] == ["Scaled", direct.READ]


async def test_a_bad_reading_falls_back_to_prometheus_with_a_typed_reason_and_one_event() -> None:
    rt = runtime()
    rt.direct = DirectPath(pods=lambda ns, d: [], wall=rt.wall)
    rt.direct.readings[("ns", "orders")] = Reading(at=rt.wall(), reason=direct.BAD_DATA, message="pod w-0: HTTP 500")
    body = pool(metrics={"direct": {"enabled": True}})
    res = await tick(rt, body, TARGET)
    st = res.status
    assert st is not None and st["signals"]["backlog"] == 0.0 and st["signals"]["backlogSource"] == "prometheus"
    assert cond(st, "DirectMetrics")["reason"] == direct.BAD_DATA
    assert ("Warning", direct.BAD_DATA) in [(e[0], e[1]) for e in res.events]
    body["status"] = st
    rt.clock[0] += 10  # type: ignore[attr-defined]
    again = await tick(rt, body, TARGET)
    assert direct.BAD_DATA not in [e[1] for e in again.events]  # one Event per change of reason


async def test_opting_in_without_the_operator_flag_is_explained() -> None:
    rt = runtime()
    res = await tick(rt, pool(metrics={"direct": {"enabled": True}}), TARGET)
    assert res.status is not None and cond(res.status, "DirectMetrics")["reason"] == direct.DISABLED
    plain = await tick(runtime(), pool(), TARGET)
    assert plain.status is not None and all(c["type"] != "DirectMetrics" for c in plain.status["conditions"])


async def test_the_http_edge_follows_no_redirect_and_bounds_the_answer() -> None:
    """A real HTTP server on loopback: a redirect is not followed (it could point anywhere), an answer beyond
    MAX_BYTES is refused, a good one is parsed."""
    from aiohttp import web

    async def good(_: web.Request) -> web.Response:
        return web.Response(text=FOUR)

    async def redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/metrics")

    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"# " + b"x" * 65_533 + b"\n"
        for _i in range(direct.MAX_BYTES // len(chunk) + 2):
            await resp.write(chunk)
        return resp

    ports = {}
    runners = []
    for name, handler in (("good", good), ("redirect", redirect), ("huge", huge)):
        app = web.Application()
        app.router.add_get(direct.PATH, handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    dp = DirectPath(pods=lambda ns, d: [], timeout=5.0)
    try:
        assert parse_backlog(await dp._http("127.0.0.1", ports["good"]), "orders") == 4.0
        with pytest.raises(DirectError, match="HTTP 302"):
            await dp._http("127.0.0.1", ports["redirect"])
        with pytest.raises(DirectError, match="larger than") as err:
            await dp._http("127.0.0.1", ports["huge"])
        assert err.value.reason == direct.BAD_DATA
    finally:
        await dp.close()
        for runner in runners:
            await runner.cleanup()
