"""A throwaway PKI for the local control plane: CA, apiserver serving cert, client certs, ServiceAccount keys.

Generated with ``cryptography`` (a dependency of the kubernetes client, so always installed) in well under a
second. EC P-256 keys keep generation fast; the ServiceAccount signing key is RSA because every Kubernetes
component and token consumer accepts RS256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=2)
_PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate and its key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalPKI:
    """Every file the control plane and its clients need, all under one directory."""

    ca: CertFiles
    apiserver: CertFiles
    admin: CertFiles
    controller_manager: CertFiles
    sa_private_key: Path
    sa_public_key: Path


def _key_pem(key: _PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _write(directory: Path, stem: str, cert: x509.Certificate, key: _PrivateKey) -> CertFiles:
    files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_key_pem(key))
    files.key.chmod(0o600)
    return files


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # Key identifiers: Python 3.13's default TLS context verifies strictly (VERIFY_X509_STRICT, Debian 13)
        # and refuses a chain without them ("Missing Authority Key Identifier").
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(common_name)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_cert, ca_key


def generate_pki(directory: Path, service_ip: str = "10.0.0.1") -> LocalPKI:
    """Write a fresh CA and the certificates/keys signed by it into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca("chanscale-local-ca")
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip)]
    server = _leaf(ca_cert, ca_key, _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    # system:masters is the bootstrap superuser group: the test harness (and the controller-manager, which then
    # needs no per-controller credentials) may do anything, while RBAC still applies to ServiceAccount tokens.
    admin = _leaf(ca_cert, ca_key, _name("chanscale-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
    kcm = _leaf(
        ca_cert, ca_key, _name("system:kube-controller-manager", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH
    )
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_private = directory / "sa.key"
    sa_public = directory / "sa.pub"
    sa_private.write_bytes(_key_pem(sa_key))
    sa_private.chmod(0o600)
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return LocalPKI(
        ca=_write(directory, "ca", ca_cert, ca_key),
        apiserver=_write(directory, "apiserver", *server),
        admin=_write(directory, "admin", *admin),
        controller_manager=_write(directory, "kube-controller-manager", *kcm),
        sa_private_key=sa_private,
        sa_public_key=sa_public,
    )


@dataclass(frozen=True)
class TLSFiles:
    """A CA, a loopback server certificate and a client certificate, for a TLS-protected test service."""

    ca: CertFiles
    server: CertFiles
    client: CertFiles


def generate_tls(directory: Path, ca_name: str = "chanscale-test-ca", client_name: str = "chanscale") -> TLSFiles:
    """A fresh CA with a server cert for localhost/127.0.0.1 and a client cert (mutual TLS), written as PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca(ca_name)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _leaf(ca_cert, ca_key, _name("localhost"), ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client = _leaf(ca_cert, ca_key, _name(client_name), ExtendedKeyUsageOID.CLIENT_AUTH)
    return TLSFiles(
        ca=_write(directory, "ca", ca_cert, ca_key),
        server=_write(directory, "server", *server),
        client=_write(directory, "client", *client),
    )
