"""The status writer on kopf's session: the request it sends, what it returns, its failures, and its fallback."""

import asyncio
import contextvars
import inspect
from typing import Any

import pytest
from kopf._cogs.clients import api, auth, errors

from chanscale.kube import METADATA_ONLY, SessionStatusWriter, StatusWriteError

pytestmark = pytest.mark.unit


def kopf_signature(fn: Any) -> Any:
    """A fake with the real ``api.request``'s signature (the writer checks it before trusting kopf's client)."""
    fn.__signature__ = inspect.signature(api.request)
    return fn


class Fallback:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    async def write_status(self, namespace: str, name: str, patch: Any) -> str | None:
        self.calls.append(("status", namespace, name))
        return "7"

    async def write_labels(self, namespace: str, name: str, labels: Any) -> None:
        self.calls.append(("labels", namespace, name))


class Response:
    def __init__(self, data: Any) -> None:
        self.data = data

    async def __aenter__(self) -> "Response":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def json(self) -> Any:
        return self.data


def run_in_kopf_context(coro_fn: Any) -> Any:
    """Run as the ticker's tasks do: with kopf's credentials vault in the context."""

    async def main() -> Any:
        auth.vault_var.set(object())  # type: ignore[arg-type]
        return await coro_fn()

    return asyncio.run(main())


def test_a_status_write_is_one_merge_patch_of_the_status_subresource(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    @kopf_signature
    async def request(**kwargs: Any) -> Response:
        sent.append(kwargs)
        return Response({"metadata": {"resourceVersion": "42"}})

    monkeypatch.setattr(api, "request", request)
    fallback = Fallback()
    writer = SessionStatusWriter(settings=None, fallback=fallback)  # type: ignore[arg-type]
    rv = run_in_kopf_context(lambda: writer.write_status("ns", "orders", {"replicas": 3}))
    assert rv == "42" and fallback.calls == []
    (req,) = sent
    assert req["method"] == "patch"
    assert req["url"] == "/apis/chanscale.dev/v1alpha1/namespaces/ns/workerpools/orders/status?fieldManager=chanscale"
    assert req["payload"] == {"status": {"replicas": 3}}
    assert req["headers"] == {"Content-Type": "application/merge-patch+json", "Accept": METADATA_ONLY}
    assert req["backoffs"] == ()  # one attempt: a failed write is retried on the next tick, not for a minute
    run_in_kopf_context(lambda: writer.write_labels("ns", "orders", {"chanscale.dev/escalated": None}))
    assert sent[1]["url"].startswith("/apis/chanscale.dev/v1alpha1/namespaces/ns/workerpools/orders?")
    assert sent[1]["payload"] == {"metadata": {"labels": {"chanscale.dev/escalated": None}}}


@pytest.mark.parametrize(
    "error",
    [
        errors.APINotFoundError({"message": "gone"}, status=404, headers={}),
        errors.APIServerError({"message": "etcd"}, status=503, headers={}),
        ConnectionResetError("reset"),
        asyncio.TimeoutError(),
    ],
)
def test_every_failure_is_a_status_write_error(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    @kopf_signature
    async def request(**kwargs: Any) -> Response:
        raise error

    monkeypatch.setattr(api, "request", request)
    writer = SessionStatusWriter(settings=None, fallback=Fallback())  # type: ignore[arg-type]
    with pytest.raises(StatusWriteError):
        run_in_kopf_context(lambda: writer.write_status("ns", "orders", {"replicas": 3}))


def test_outside_kopf_the_official_client_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    @kopf_signature
    async def request(**kwargs: Any) -> Response:
        raise AssertionError("kopf's session has no credentials here")

    monkeypatch.setattr(api, "request", request)
    fallback = Fallback()
    writer = SessionStatusWriter(settings=None, fallback=fallback)  # type: ignore[arg-type]
    rv = contextvars.Context().run(asyncio.run, writer.write_status("ns", "orders", {"replicas": 3}))
    asyncio.run(writer.write_labels("ns", "orders", {}))
    assert rv == "7" and fallback.calls == [("status", "ns", "orders"), ("labels", "ns", "orders")]


def test_a_kopf_whose_internal_client_changed_gets_the_official_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's api.request is internal: if a kopf release renames its arguments, writes must not fail every tick."""

    async def request(method: str, url: str, **kwargs: Any) -> Response:  # no backoffs, settings, ...
        raise AssertionError("not to be called")

    monkeypatch.setattr(api, "request", request)
    fallback = Fallback()
    writer = SessionStatusWriter(settings=None, fallback=fallback)  # type: ignore[arg-type]
    rv = run_in_kopf_context(lambda: writer.write_status("ns", "orders", {"replicas": 3}))
    assert rv == "7" and fallback.calls == [("status", "ns", "orders")] and writer.fell_back
