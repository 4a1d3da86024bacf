"""https:// receivers: an attempt dials the address the guard vetted, yet presents the URL's host in
SNI and checks the certificate against it — a certificate for another name, or from an authority
nobody trusts, fails the attempt. Certificates are made here (a throwaway CA) and served on
127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from a3e.webhooks.delivery import attempt
from a3e.webhooks.signing import new_secret


def _key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Authority:
    key: Any
    certificate: Any

    def issue(self, host: str, directory: Path) -> tuple[Path, Path]:
        """A server certificate for `host`, written as PEM files (certificate, key)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        key = _key()
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(host)).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def make_authority(directory: Path) -> tuple[Authority, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("A3E test campus CA")).issuer_name(_name("A3E test campus CA"))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "campus-ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(key, certificate), path


@dataclass
class TlsReceiver:
    port: int
    server_names: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@pytest.fixture
def authority(tmp_path) -> tuple[Authority, Path]:
    return make_authority(tmp_path)


@pytest.fixture
def serve_tls(tmp_path) -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(cert_path: Path, key_path: Path) -> TlsReceiver:
        receiver = TlsReceiver(port=0)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.hosts.append(self.headers["host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        context.sni_callback = lambda sock, name, ctx: receiver.server_names.append(name)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        servers.append(server)
        receiver.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def send(settings, url: str):
    return attempt(settings, url, "msg_tls", '{"type":"member.joined","timestamp":"t","data":{}}', [new_secret()])


def test_a_receiver_with_a_certificate_for_the_urls_host_is_reached_at_the_vetted_address(
    make_settings, authority, serve_tls, tmp_path
):
    ca, bundle = authority
    receiver = serve_tls(*ca.issue("localhost", tmp_path))
    settings = make_settings(webhooks_allow_private=True, webhooks_ca_bundle=bundle)
    result = send(settings, f"https://localhost:{receiver.port}/hook")
    assert result.succeeded, result.error
    assert result.status_code == 204
    assert receiver.server_names == ["localhost"]  # SNI names the URL's host, though 127.0.0.1 was dialled
    assert receiver.hosts == [f"localhost:{receiver.port}"]


def test_a_certificate_for_another_name_or_from_an_unknown_authority_fails_the_attempt(
    make_settings, authority, serve_tls, tmp_path
):
    ca, bundle = authority
    impostor = serve_tls(*ca.issue("intranet.example.edu", tmp_path))
    trusting = make_settings(webhooks_allow_private=True, webhooks_ca_bundle=bundle)
    wrong_name = send(trusting, f"https://localhost:{impostor.port}/hook")
    assert not wrong_name.succeeded and "certificate" in wrong_name.error.lower()
    assert impostor.hosts == []  # nothing was sent over the unverified connection

    honest = serve_tls(*ca.issue("localhost", tmp_path))
    untrusting = make_settings(webhooks_allow_private=True)  # the public authorities only
    unknown = send(untrusting, f"https://localhost:{honest.port}/hook")
    assert not unknown.succeeded and "certificate verify failed" in unknown.error.lower()
    assert honest.hosts == []


def test_a_missing_or_broken_ca_bundle_is_reported(make_settings, tmp_path):
    from a3e.core.settings import read_settings

    _, problems = read_settings(_env_file=None, webhooks_ca_bundle=tmp_path / "missing.pem")
    assert [p.variable for p in problems] == ["A3E_WEBHOOKS_CA_BUNDLE"] and "is not a file" in problems[0].message
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    settings = make_settings(webhooks_allow_private=True, webhooks_ca_bundle=broken)
    result = send(settings, f"https://{ipaddress.ip_address('127.0.0.1')}:9/hook")
    assert not result.succeeded and result.error.startswith("A3E_WEBHOOKS_CA_BUNDLE cannot be loaded")
