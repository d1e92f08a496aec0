"""How the operator authenticates to Prometheus: the cluster admin's configuration, never a pool's.

A pool can only *name* an address the admin allowed (tenancy.py); the credentials below are the operator's own
and are sent to the admin-approved addresses only (``--prometheus-url`` and ``--prometheus-allowed-url``), so a
tenant can neither choose nor read them. Secrets come from files (a mounted Secret) and are re-read when the
file changes, so a rotated token is picked up without a restart; only file *paths* are ever logged.

- bearer token (``Authorization: Bearer``) from a file, or basic auth with the password in a file;
- a CA bundle to verify the server, and a client certificate and key for mutual TLS;
- extra headers, e.g. ``X-Scope-OrgID: team-a`` for Mimir, Cortex, Thanos or Loki-style tenancy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from requests.auth import AuthBase, HTTPBasicAuth

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")  # an RFC 9110 token
# Set by the operator from its own flags: a header here would bypass (or contradict) them.
_RESERVED_HEADERS = {"authorization", "host", "content-length", "transfer-encoding", "connection"}


class AuthConfigError(ValueError):
    """The Prometheus auth flags are inconsistent; the message names the flag and the fix."""


class _SecretFile:
    """A file's stripped content, re-read when its mtime or inode changes (kubelet swaps Secret volumes by
    symlink, so a rotated Secret is a new inode)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._value = ""

    def read(self) -> str:
        st = os.stat(self.path)
        stamp = (st.st_ino, st.st_mtime_ns)
        if stamp != self._stamp:
            self._value = Path(self.path).read_text().strip()
            self._stamp = stamp
        return self._value


class BearerTokenFileAuth(AuthBase):
    """``Authorization: Bearer <token>`` with the token read from a file on every request (cached by mtime)."""

    def __init__(self, path: str) -> None:
        self._file = _SecretFile(path)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._file.read()}"
        return r


class BasicAuthFileAuth(AuthBase):
    """Basic auth with the password read from a file (cached by mtime)."""

    def __init__(self, username: str, password_path: str) -> None:
        self.username = username
        self._file = _SecretFile(password_path)

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return HTTPBasicAuth(self.username, self._file.read())(r)


def parse_headers(items: list[str] | tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``["X-Scope-OrgID=team-a", ...]`` -> ``(("X-Scope-OrgID", "team-a"), ...)``; errors name the flag."""
    out: list[tuple[str, str]] = []
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _HEADER_NAME.match(name):
            raise AuthConfigError(f"--prometheus-header {item!r}: expected NAME=VALUE, e.g. X-Scope-OrgID=team-a")
        if name.lower() in _RESERVED_HEADERS:
            raise AuthConfigError(
                f"--prometheus-header {name}: set by the operator; use --prometheus-bearer-token-file or "
                "--prometheus-basic-auth-user for credentials"
            )
        if "\r" in value or "\n" in value:
            raise AuthConfigError(f"--prometheus-header {name}: the value must be one line")
        out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class PrometheusAuth:
    """The operator's Prometheus client settings (``chanscale run --prometheus-*`` flags, chart ``prometheus.*``)."""

    bearer_token_file: str | None = None
    basic_auth_user: str | None = None
    basic_auth_password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def validate(self) -> None:
        """Refuse inconsistent settings and unreadable files at start-up, naming the flag."""
        if self.bearer_token_file and self.basic_auth_user:
            raise AuthConfigError(
                "--prometheus-bearer-token-file and --prometheus-basic-auth-user both set: choose one"
            )
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise AuthConfigError(
                "--prometheus-basic-auth-user and --prometheus-basic-auth-password-file go together: set both"
            )
        if bool(self.cert_file) != bool(self.key_file):
            raise AuthConfigError("--prometheus-cert-file and --prometheus-key-file go together: set both")
        for flag, path in (
            ("--prometheus-bearer-token-file", self.bearer_token_file),
            ("--prometheus-basic-auth-password-file", self.basic_auth_password_file),
            ("--prometheus-ca-file", self.ca_file),
            ("--prometheus-cert-file", self.cert_file),
            ("--prometheus-key-file", self.key_file),
        ):
            if path and not os.access(path, os.R_OK):
                raise AuthConfigError(f"{flag} {path}: not readable (is the Secret mounted there?)")

    def session(self) -> requests.Session:
        """A requests session that sends these credentials (one per Prometheus address)."""
        s = requests.Session()
        if self.ca_file:
            s.verify = self.ca_file
        if self.cert_file and self.key_file:
            s.cert = (self.cert_file, self.key_file)
        s.headers.update(dict(self.headers))
        auth: AuthBase | None = None
        if self.bearer_token_file:
            auth = BearerTokenFileAuth(self.bearer_token_file)
        elif self.basic_auth_user and self.basic_auth_password_file:
            auth = BasicAuthFileAuth(self.basic_auth_user, self.basic_auth_password_file)
        s.auth = auth
        return s

    def describe(self) -> str:
        """For the start-up log line: what is configured, with file paths and header *names* only."""
        parts = []
        if self.bearer_token_file:
            parts.append(f"bearer token from {self.bearer_token_file}")
        if self.basic_auth_user:
            parts.append(f"basic auth as {self.basic_auth_user}")
        if self.ca_file:
            parts.append(f"CA {self.ca_file}")
        if self.cert_file:
            parts.append(f"client cert {self.cert_file}")
        if self.headers:
            parts.append("headers " + ",".join(n for n, _ in self.headers))
        return "; ".join(parts) or "none"


def from_args(args: Any) -> PrometheusAuth:
    """The auth settings from ``chanscale run``'s parsed flags, validated."""
    auth = PrometheusAuth(
        bearer_token_file=args.prometheus_bearer_token_file or None,
        basic_auth_user=args.prometheus_basic_auth_user or None,
        basic_auth_password_file=args.prometheus_basic_auth_password_file or None,
        ca_file=args.prometheus_ca_file or None,
        cert_file=args.prometheus_cert_file or None,
        key_file=args.prometheus_key_file or None,
        headers=parse_headers(args.prometheus_header or ()),
    )
    auth.validate()
    return auth
