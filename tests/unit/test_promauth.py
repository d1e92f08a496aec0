"""The operator's Prometheus credentials: flag validation, headers, secrets never logged, file rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from chanscale.cli import build_parser, prometheus_auth_from_args
from chanscale.promauth import AuthConfigError, BearerTokenFileAuth, PrometheusAuth, parse_headers

pytestmark = pytest.mark.unit


def test_headers_parse_and_refuse_what_the_operator_sets() -> None:
    assert parse_headers(["X-Scope-OrgID=team-a", "X-Extra=a=b"]) == (("X-Scope-OrgID", "team-a"), ("X-Extra", "a=b"))
    with pytest.raises(AuthConfigError, match="--prometheus-header 'X-Scope-OrgID': expected NAME=VALUE"):
        parse_headers(["X-Scope-OrgID"])
    with pytest.raises(AuthConfigError, match="--prometheus-bearer-token-file"):
        parse_headers(["Authorization=Bearer x"])
    with pytest.raises(AuthConfigError, match="one line"):
        parse_headers(["X-A=a\r\nX-B: b"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cert_file": "c"}, "--prometheus-cert-file and --prometheus-key-file go together"),
        ({"basic_auth_user": "u"}, "--prometheus-basic-auth-password-file go together"),
        (
            {"bearer_token_file": "t", "basic_auth_user": "u", "basic_auth_password_file": "p"},
            "choose one",
        ),
        ({"ca_file": "/nonexistent/ca.crt"}, "--prometheus-ca-file /nonexistent/ca.crt: not readable"),
    ],
)
def test_inconsistent_settings_name_the_flag(fields: dict[str, str], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message):
        PrometheusAuth(**fields).validate()  # type: ignore[arg-type]


def test_flags_and_env_reach_the_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    ca = tmp_path / "ca.crt"
    ca.write_text("pem")
    monkeypatch.setenv("CHANSCALE_PROMETHEUS_BEARER_TOKEN_FILE", str(token))
    args = build_parser().parse_args(
        ["run", "--prometheus-ca-file", str(ca), "--prometheus-header", "X-Scope-OrgID=team-a"]
    )
    auth = prometheus_auth_from_args(args)
    s = auth.session()
    assert s.verify == str(ca) and s.headers["X-Scope-OrgID"] == "team-a"
    prepared = s.prepare_request(requests.Request("GET", "http://127.0.0.1:9/api/v1/query"))
    assert prepared.headers["Authorization"] == "Bearer abc"
    assert "abc" not in auth.describe() and str(token) in auth.describe()


def test_bad_flags_stop_the_operator_with_the_reason() -> None:
    args = build_parser().parse_args(["run", "--prometheus-cert-file", "/x.crt"])
    with pytest.raises(SystemExit, match="--prometheus-key-file"):
        prometheus_auth_from_args(args)


def test_token_is_re_read_when_the_file_is_replaced(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    auth = BearerTokenFileAuth(str(token))
    req = requests.Request("GET", "http://127.0.0.1:9/").prepare()
    assert auth(req).headers["Authorization"] == "Bearer one"
    new = tmp_path / "new"
    new.write_text("two")
    new.replace(token)
    assert auth(req).headers["Authorization"] == "Bearer two"


def test_no_auth_by_default_sends_nothing() -> None:
    s = PrometheusAuth().session()
    assert s.auth is None and s.verify is True and "X-Scope-OrgID" not in s.headers
    assert PrometheusAuth().describe() == "none"


async def test_reader_sends_nothing_to_an_address_the_admin_did_not_approve() -> None:
    """Defence in depth behind tenancy.refusal: the credentials stay with admin-approved Prometheus addresses."""
    from chanscale.signals import PrometheusReader, QueryError

    reader = PrometheusReader("http://prom:9090", allowed={"http://prom:9090"}, auth=PrometheusAuth())
    with pytest.raises(QueryError, match="not an admin-approved"):
        await reader.query("http://evil.example:80", "vector(1)")
    assert not reader._clients
