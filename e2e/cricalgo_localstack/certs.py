"""The local control plane's PKI: a CA, the API server's serving certificate, client
certificates for the admin and the control-plane components, and the service-account
signing key. Generated fresh on every start; nothing here is a secret worth keeping."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Every file the control plane needs."""

    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    scheduler: KeyPair
    service_account_key: Path
    service_account_pub: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _issue(
    directory: Path,
    stem: str,
    subject: x509.Name,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = KeyPair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pair.key, key)
    return pair


def _new_ca(
    directory: Path, common_name: str
) -> tuple[KeyPair, x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_name = _name(common_name)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca = KeyPair(cert=directory / "ca.crt", key=directory / "ca.key")
    ca.cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca.key, ca_key)
    return ca, ca_cert, ca_key


@dataclass(frozen=True)
class ServerPKI:
    """A CA of its own, a serving certificate it signed and a client certificate."""

    ca: KeyPair
    server: KeyPair
    client: KeyPair


def generate_server_pki(directory: Path, server_names: list[str]) -> ServerPKI:
    """A fresh CA with a serving certificate for `server_names` (DNS names) and a client
    certificate: a TLS server (Prometheus' --web.config.file) and its client, both local."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = _new_ca(directory, "cricalgo-test-ca")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    server = _issue(
        directory,
        "server",
        _name(server_names[0]),
        ca_cert,
        ca_key,
        ExtendedKeyUsageOID.SERVER_AUTH,
        sans,
    )
    client = _issue(
        directory,
        "client",
        _name("cricalgo-operator"),
        ca_cert,
        ca_key,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return ServerPKI(ca=ca, server=server, client=client)


def generate_pki(directory: Path, extra_ips: tuple[str, ...] = ()) -> ClusterPKI:
    """Write a fresh PKI for a local cluster into `directory`; the API server's certificate
    also names `extra_ips` (a real node's address, where the API server then listens)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_cert, ca_key = _new_ca(directory, "cricalgo-local-ca")

    server = ExtendedKeyUsageOID.SERVER_AUTH
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    sans: list[x509.GeneralName] = [
        x509.DNSName(n)
        for n in (
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    sans += [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.96.0.1", *extra_ips)
    ]
    apiserver = _issue(
        directory, "apiserver", _name("kube-apiserver"), ca_cert, ca_key, server, sans
    )
    admin = _issue(
        directory, "admin", _name("cricalgo-admin", "system:masters"), ca_cert, ca_key, client
    )
    controller_manager = _issue(
        directory,
        "controller-manager",
        _name("system:kube-controller-manager"),
        ca_cert,
        ca_key,
        client,
    )
    scheduler = _issue(
        directory, "scheduler", _name("system:kube-scheduler"), ca_cert, ca_key, client
    )

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_key_path = directory / "sa.key"
    _write_key(sa_key_path, sa_key)
    sa_pub_path = directory / "sa.pub"
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPKI(
        ca=ca,
        apiserver=apiserver,
        admin=admin,
        controller_manager=controller_manager,
        scheduler=scheduler,
        service_account_key=sa_key_path,
        service_account_pub=sa_pub_path,
    )


def issue_certificate(
    ca: KeyPair,
    directory: Path,
    stem: str,
    common_name: str,
    organization: str | None = None,
    ips: tuple[str, ...] = (),
) -> KeyPair:
    """A certificate signed by the cluster CA on disk: a client one, or with `ips` a serving
    one (the real node's kubelet and kube-proxy identities, its kubelet's serving cert)."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    directory.mkdir(parents=True, exist_ok=True)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if ips else ExtendedKeyUsageOID.CLIENT_AUTH
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return _issue(
        directory, stem, _name(common_name, organization), ca_cert, ca_key, usage, sans or None
    )
