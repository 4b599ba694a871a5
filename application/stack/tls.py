"""A throwaway certificate authority and broker certificate for the local stack's TLS listener.

Generated on first use into the stack home (directory 0700, private key 0600), never into the checkout.
The CA's own private key is not kept: it signs the broker certificate once and is dropped, so nothing on
disk can issue further certificates. Clients trust `ca.pem` (`kafka.ssl_cafile`); the broker reads
`broker.pem` (its key, its certificate and the CA, Kafka's PEM keystore format).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
# Regenerate this long before expiry, so a running broker never serves an expired certificate.
RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class BrokerTls:
    ca: Path  # PEM certificate clients verify the broker against
    keystore: Path  # PEM: private key (PKCS#8), broker certificate, CA certificate


def broker_tls_paths(stack_home: Path) -> BrokerTls:
    directory = stack_home / "kafka" / "tls"
    return BrokerTls(directory / "ca.pem", directory / "broker.pem")


def ensure_broker_tls(stack_home: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> BrokerTls:
    """The broker's TLS files under the stack home, generated when missing or close to expiry."""
    tls = broker_tls_paths(stack_home)
    directory = tls.ca.parent
    if _still_valid(tls.ca) and tls.keystore.exists():
        return tls
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key, ca_cert = _authority()
    key, cert = _leaf(ca_key, ca_cert, hosts)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(tls.keystore, key_pem + cert.public_bytes(pem) + ca_cert.public_bytes(pem), 0o600)
    _write(tls.ca, ca_cert.public_bytes(pem), 0o644)
    return tls


def _still_valid(ca: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(ca.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def _authority() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("ragstream local stack CA")
    cert = (
        _builder(name, name, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, hosts: Sequence[str]
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        _builder(_name("ragstream local kafka"), ca_cert.subject, key)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Created with its final mode (a key is never readable by others, not even briefly), then renamed."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)  # the umask may have narrowed a public file's mode
    os.replace(tmp, path)
