"""chanscale's frequent Kubernetes writes (status, labels, scale) as merge patches over one aiohttp session.

The session lives on the operator's event loop (kopf's), with a keep-alive connection pool: a write is one HTTP
round trip awaited in place, not a hop to a worker thread that builds the request through the official client's
models, sends it with urllib3 and deserialises the answer while holding the GIL against the event loop (at 1 000
pools that was a status write every ~50 ms). Credentials, CA and proxy come from the official client's
configuration (:func:`chanscale.kube.load_client_config` loads it the way kopf logs in), read per request so a
rotated service-account token is used as the client itself would (its refresh hook).

Rare requests (template Deployments, Leases, discovery) stay on the official client.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from . import FIELD_MANAGER

MERGE_PATCH = "application/merge-patch+json"
#: Connections kept to the API server (the official client's pool had 16 for as many executor threads).
POOL_SIZE = 16


@dataclass(frozen=True)
class Answer:
    """An API server answer: the HTTP status, its reason and the decoded body (None when it was not JSON)."""

    status: int
    reason: str
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def message(self) -> str:
        """The API server's own message from a Status body (it names the field), else the HTTP reason."""
        text = self.body.get("message") if isinstance(self.body, Mapping) else None
        return f"HTTP {self.status} {text or self.reason}".strip()


def ssl_context(config: Any) -> ssl.SSLContext | None:
    """The TLS settings of the official client's configuration (None for plain http)."""
    if not str(config.host).startswith("https"):
        return None
    ctx = ssl.create_default_context(
        cafile=config.ssl_ca_cert or None, cadata=getattr(config, "ca_cert_data", None) or None
    )
    if config.cert_file:
        ctx.load_cert_chain(config.cert_file, config.key_file or None)
    if not config.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif config.assert_hostname is False:
        ctx.check_hostname = False
    return ctx


class KubeHttp:
    """One aiohttp session for chanscale's writes, rebuilt when the loop or the client configuration changes."""

    def __init__(self, config: Any = None) -> None:
        self._fixed = config  # None: the official client's default configuration (as loaded at start-up)
        self._session: aiohttp.ClientSession | None = None
        self._key: tuple[Any, Any] | None = None
        self._config: Any = None

    def _current(self) -> tuple[aiohttp.ClientSession, Any]:
        config = self._fixed
        if config is None:
            from kubernetes import client

            config = client.Configuration.get_default()
        key = (asyncio.get_running_loop(), config)
        if self._session is None or self._session.closed or self._key != key:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=ssl_context(config) or False)
            self._session = aiohttp.ClientSession(connector=connector)
            self._key, self._config = key, config
        return self._session, self._config

    async def patch(self, path: str, body: Mapping[str, Any], *, timeout: float) -> Answer:
        """Merge-patch ``path`` with field manager ``chanscale``. Transport failures raise (aiohttp.ClientError,
        asyncio.TimeoutError, OSError); any HTTP answer is returned."""
        session, config = self._current()
        headers = {"Content-Type": MERGE_PATCH, "Accept": "application/json"}
        token = config.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            headers["Authorization"] = token
        extra: dict[str, Any] = {}
        if config.proxy:
            extra["proxy"] = config.proxy
        if getattr(config, "tls_server_name", None):
            extra["server_hostname"] = config.tls_server_name
        async with session.patch(
            f"{config.host.rstrip('/')}{path}",
            params={"fieldManager": FIELD_MANAGER},
            data=json.dumps(body).encode(),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
            **extra,
        ) as resp:
            raw = await resp.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = None
            return Answer(resp.status, resp.reason or "", decoded)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


def path_of(group: str, version: str, namespace: str, plural: str, name: str, sub: str = "") -> str:
    """``/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>[/<sub>]`` (``/api/v1`` for the core group)."""
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    tail = f"/{sub}" if sub else ""
    return f"{base}/namespaces/{quote(namespace, safe='')}/{plural}/{quote(name, safe='')}{tail}"


_SHARED: list[KubeHttp] = []


def shared() -> KubeHttp:
    """The process's one session holder (its session is made on first use, on the running loop)."""
    if not _SHARED:
        _SHARED.append(KubeHttp())
    return _SHARED[0]
