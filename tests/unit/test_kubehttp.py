"""The aiohttp write path (chanscale.kubehttp) against a loopback HTTP server that answers as the API server would:
the request it sends (merge patch, field manager, bearer token) and the typed outcome of every answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client

from chanscale.kube import KubeScaler, KubeStatusWriter, ScaleError, StatusWriteError
from chanscale.kubehttp import KubeHttp

pytestmark = pytest.mark.unit


class FakeApi:
    """Answers PATCHes with a queue of (status, body) and records each request."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any]] = []
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "type": request.headers.get("Content-Type"),
                "auth": request.headers.get("Authorization"),
                "body": json.loads(await request.read()),
            }
        )
        status, body = self.answers.pop(0) if self.answers else (200, {"metadata": {"resourceVersion": "7"}})
        return web.json_response(body, status=status)


@pytest.fixture
async def api() -> Any:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("PATCH", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    config = client.Configuration(host=f"http://127.0.0.1:{server.port}", api_key={"authorization": "t0k"})
    config.api_key_prefix = {"authorization": "Bearer"}
    http = KubeHttp(config)
    yield fake, http
    await http.close()
    await server.close()


async def test_status_write_is_a_merge_patch_of_the_status_subresource(api: Any) -> None:
    fake, http = api
    rv = await KubeStatusWriter(http=http).write_status("ns", "p1", {"replicas": 3, "note": None})
    assert rv == "7"
    req = fake.seen[0]
    assert req["path"] == "/apis/chanscale.dev/v1alpha1/namespaces/ns/workerpools/p1/status"
    assert req["type"] == "application/merge-patch+json"
    assert req["query"] == {"fieldManager": "chanscale"}
    assert req["auth"] == "Bearer t0k"
    assert req["body"] == {"status": {"replicas": 3, "note": None}}


async def test_label_write_patches_the_object(api: Any) -> None:
    fake, http = api
    await KubeStatusWriter(http=http).write_labels("ns", "p1", {"a": "b", "gone": None})
    assert fake.seen[0]["path"] == "/apis/chanscale.dev/v1alpha1/namespaces/ns/workerpools/p1"
    assert fake.seen[0]["body"] == {"metadata": {"labels": {"a": "b", "gone": None}}}


@pytest.mark.parametrize("status", [404, 409, 422, 500])
async def test_status_write_refused_is_not_written(api: Any, status: int) -> None:
    fake, http = api
    fake.answers = [(status, {"kind": "Status", "message": 'workerpools.chanscale.dev "p1" is bad'})]
    with pytest.raises(StatusWriteError, match=f"HTTP {status} workerpools"):
        await KubeStatusWriter(http=http).write_status("ns", "p1", {"replicas": 3})


async def test_status_write_to_a_dead_server_is_not_written() -> None:
    config = client.Configuration(host="http://127.0.0.1:9")  # discard port: connection refused
    http = KubeHttp(config)
    try:
        with pytest.raises(StatusWriteError):
            await KubeStatusWriter(http=http, timeout=2).write_status("ns", "p1", {"replicas": 3})
    finally:
        await http.close()


async def test_scale_patches_the_scale_subresource(api: Any) -> None:
    fake, http = api
    await KubeScaler(http=http).scale("ns", "web", 4)
    req = fake.seen[0]
    assert req["path"] == "/apis/apps/v1/namespaces/ns/deployments/web/scale"
    assert req["type"] == "application/merge-patch+json"
    assert req["body"] == {"spec": {"replicas": 4}}


@pytest.mark.parametrize(
    ("status", "reason", "retryable"),
    [(404, "TargetNotFound", False), (403, "Forbidden", False), (422, "ApiError", True)],
)
async def test_scale_refusals_are_typed(api: Any, status: int, reason: str, retryable: bool) -> None:
    fake, http = api
    fake.answers = [(status, {"kind": "Status"})]
    with pytest.raises(ScaleError) as err:
        await KubeScaler(http=http).scale("ns", "web", 4)
    assert (err.value.reason, err.value.retryable) == (reason, retryable)
    assert len(fake.seen) == 1


async def test_scale_retries_conflicts_and_overload_then_gives_up(api: Any) -> None:
    fake, http = api
    fake.answers = [(409, {}), (503, {})]
    await KubeScaler(http=http).scale("ns", "web", 4)  # the third attempt succeeds
    assert len(fake.seen) == 3
    fake.answers = [(409, {})] * 3
    with pytest.raises(ScaleError) as err:
        await KubeScaler(http=http).scale("ns", "web", 4)
    assert (err.value.reason, err.value.retryable) == ("ApiError", True)


async def test_one_session_serves_concurrent_writes(api: Any) -> None:
    fake, http = api
    writer = KubeStatusWriter(http=http)
    await asyncio.gather(*(writer.write_status("ns", f"p{i}", {"replicas": i}) for i in range(20)))
    assert len(fake.seen) == 20
    assert http._session is not None and not http._session.closed
