"""The operator's Prometheus credentials against a real Prometheus behind the matching authentication.

- TLS with a private CA, required client certificates (mutual TLS) and basic auth: Prometheus' own
  ``--web.config.file``;
- a bearer token and a tenant header (``X-Scope-OrgID``, as Mimir/Cortex/Thanos read it): a small reverse proxy on
  loopback in front of the session Prometheus, which refuses any request without both (what a gateway does);
- end to end: the operator, started with the flags the chart sets, scales a pool through that proxy.

Each credential is also checked the other way: without it the same query fails with the server's refusal.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import http.server
import secrets
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_operator_behaviour import BURST_RATE, channel, create_worker, fast_pool, pool_status, procs, replicas

from chanscale.local.harness import Kubectl, OperatorFactory, SimFactory
from chanscale.local.pki import TLSFiles, generate_tls
from chanscale.local.process import LOOPBACK, wait_until
from chanscale.local.prometheus import LocalPrometheus
from chanscale.promauth import PrometheusAuth
from chanscale.signals import PrometheusReader, QueryError

pytestmark = pytest.mark.integration

USER, PASSWORD = "chanscale", "s3cret-pass"
TOKEN, TENANT = "token-one", "team-a"


def bcrypt_hash(password: str) -> str:
    """Prometheus' web config wants bcrypt; libxcrypt's crypt(3) makes it. Through ctypes: Python 3.13 (Debian 13's)
    removed the stdlib ``crypt`` wrapper. The salt's 22nd character carries only two bits, so it is one whose low
    four are zero (canonical for every bcrypt implementation)."""
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt = "$2b$04$" + "".join(secrets.choice(alphabet) for _ in range(21)) + secrets.choice(alphabet[::16])
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype, lib.crypt.argtypes = ctypes.c_char_p, [ctypes.c_char_p, ctypes.c_char_p]
    hashed = lib.crypt(password.encode(), salt.encode())
    assert hashed and hashed.startswith(b"$2b$04$"), f"crypt(3) made no bcrypt hash: {hashed!r}"
    return str(hashed.decode())


def query_once(address: str, auth: PrometheusAuth, expr: str = "vector(1)") -> dict[object, float]:
    """One instant query through the operator's own reader (no cache: a fresh reader per call)."""
    return asyncio.run(PrometheusReader(address, ttl=0, auth=auth).query(address, expr))


# ------------------------------------------------------------------------- TLS + client certs + basic auth
@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return generate_tls(tmp_path_factory.mktemp("prom-tls"))


@pytest.fixture(scope="module")
def tls_prometheus(tls: TLSFiles) -> Iterator[LocalPrometheus]:
    web_config = {
        "tls_server_config": {
            "cert_file": str(tls.server.cert),
            "key_file": str(tls.server.key),
            "client_auth_type": "RequireAndVerifyClientCert",
            "client_ca_file": str(tls.ca.cert),
        },
        "basic_auth_users": {USER: bcrypt_hash(PASSWORD)},
    }
    ctx = ssl.create_default_context(cafile=str(tls.ca.cert))
    ctx.load_cert_chain(str(tls.client.cert), str(tls.client.key))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    opener.addheaders = [("Authorization", "Basic " + _b64(f"{USER}:{PASSWORD}"))]
    with LocalPrometheus(web_config=web_config, opener=opener) as prom:
        yield prom


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def full_tls_auth(tls: TLSFiles, password_file: Path, **override: object) -> PrometheusAuth:
    fields: dict[str, object] = {
        "ca_file": str(tls.ca.cert),
        "cert_file": str(tls.client.cert),
        "key_file": str(tls.client.key),
        "basic_auth_user": USER,
        "basic_auth_password_file": str(password_file),
    }
    fields.update(override)
    auth = PrometheusAuth(**fields)  # type: ignore[arg-type]
    auth.validate()
    return auth


def test_ca_client_cert_and_basic_auth_reach_a_tls_prometheus(
    tls_prometheus: LocalPrometheus, tls: TLSFiles, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")  # a Secret's trailing newline is not part of the password
    assert tls_prometheus.url.startswith("https://")
    assert query_once(tls_prometheus.url, full_tls_auth(tls, password))[None] == 1.0


@pytest.mark.parametrize(
    ("missing", "error"),
    [
        ("ca_file", "CERTIFICATE_VERIFY_FAILED"),  # the system CAs do not know the private CA
        ("client_cert", "SSLError"),  # RequireAndVerifyClientCert: the handshake fails
        ("basic_auth", "401"),
    ],
)
def test_tls_prometheus_refuses_without_each_credential(
    tls_prometheus: LocalPrometheus, tls: TLSFiles, tmp_path: Path, missing: str, error: str
) -> None:
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    override: dict[str, object] = {
        "ca_file": {"ca_file": None},
        "client_cert": {"cert_file": None, "key_file": None},
        "basic_auth": {"basic_auth_user": None, "basic_auth_password_file": None},
    }[missing]
    with pytest.raises(QueryError, match=error):
        query_once(tls_prometheus.url, full_tls_auth(tls, password, **override))


# ------------------------------------------------------------------ bearer token + tenant header (proxy)
class AuthProxy:
    """A reverse proxy on loopback that forwards to ``upstream`` only with ``Authorization: Bearer <token>`` and
    ``X-Scope-OrgID: <tenant>``; else 401/403, as a Mimir/Cortex gateway or kube-rbac-proxy answers."""

    def __init__(self, upstream: str, token: str, tenant: str) -> None:
        self.upstream, self.token, self.tenant = upstream, token, tenant
        self.accepted = 0
        self.refused: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._forward()

            def do_POST(self) -> None:
                self._forward()

            def _forward(self) -> None:
                problem = proxy.check(self.headers.get("Authorization"), self.headers.get("X-Scope-OrgID"))
                if problem is not None:
                    proxy.refused.append(problem)
                    self.send_error(401 if "token" in problem else 403, problem)
                    return
                proxy.accepted += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                req = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command)
                if self.headers.get("Content-Type"):
                    req.add_header("Content-Type", self.headers["Content-Type"])
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        status, payload = resp.status, resp.read()
                except urllib.error.HTTPError as e:
                    status, payload = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def check(self, authorization: str | None, tenant: str | None) -> str | None:
        if authorization != f"Bearer {self.token}":
            return "missing or wrong bearer token"
        if tenant != self.tenant:
            return f"wrong tenant {tenant!r}"
        return None

    def __enter__(self) -> AuthProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def auth_proxy(prometheus: LocalPrometheus) -> Iterator[AuthProxy]:
    with AuthProxy(prometheus.url, TOKEN, TENANT) as proxy:
        yield proxy


def test_bearer_token_and_tenant_header_pass_the_proxy(auth_proxy: AuthProxy, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    auth = PrometheusAuth(bearer_token_file=str(token), headers=(("X-Scope-OrgID", TENANT),))
    assert query_once(auth_proxy.url, auth)[None] == 1.0
    assert auth_proxy.accepted == 1 and not auth_proxy.refused

    with pytest.raises(QueryError, match="401"):
        query_once(auth_proxy.url, PrometheusAuth(headers=(("X-Scope-OrgID", TENANT),)))
    with pytest.raises(QueryError, match="403"):
        query_once(auth_proxy.url, PrometheusAuth(bearer_token_file=str(token)))
    assert auth_proxy.accepted == 1


def test_rotated_token_file_is_read_without_a_restart(auth_proxy: AuthProxy, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    auth = PrometheusAuth(bearer_token_file=str(token), headers=(("X-Scope-OrgID", TENANT),))
    reader = PrometheusReader(auth_proxy.url, ttl=0, auth=auth)  # one reader, one session, as in the operator

    async def twice() -> None:
        assert (await reader.query(auth_proxy.url, "vector(1)"))[None] == 1.0
        auth_proxy.token = "token-two"  # the gateway now wants the new token ...
        rotated = tmp_path / "token.new"
        rotated.write_text("token-two")
        rotated.replace(token)  # ... and kubelet swaps the Secret file in (a new inode)
        assert (await reader.query(auth_proxy.url, "vector(2)"))[None] == 2.0

    asyncio.run(twice())
    assert auth_proxy.accepted == 2 and not auth_proxy.refused


def test_operator_scales_through_an_authenticating_gateway(
    kubectl: Kubectl,
    namespace: str,
    channel_sim: SimFactory,
    operator_process: OperatorFactory,
    auth_proxy: AuthProxy,
    tmp_path: Path,
) -> None:
    """The flags the chart sets (a mounted Secret's token file and a tenant header) carry every query."""
    token = tmp_path / "token"
    token.write_text(TOKEN)
    create_worker(kubectl, namespace, 1)
    channel_sim([channel(namespace, BURST_RATE)])
    assert kubectl.apply(fast_pool(), namespace).returncode == 0
    op = operator_process(
        namespaces=[namespace],
        prometheus_url=auth_proxy.url,
        extra_args=["--prometheus-header", f"X-Scope-OrgID={TENANT}"],
        env={"CHANSCALE_PROMETHEUS_BEARER_TOKEN_FILE": str(token)},
    )
    wait_until(lambda: replicas(kubectl, namespace) > 1, 90, "a scale-up read through the gateway", procs(op))
    assert auth_proxy.accepted > 0 and not auth_proxy.refused, auth_proxy.refused
    metrics = next(c for c in pool_status(kubectl, namespace)["conditions"] if c["type"] == "MetricsAvailable")
    assert metrics["status"] == "True", metrics
