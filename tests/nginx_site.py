"""nginx running a shipped ``deploy/*.conf`` site file: rendered, wrapped, checked, waited for.

One place for how the deploy files are run, shared by ``tests/test_nginx.py`` and
``bench/bench_delivery.py`` (which appends this directory to ``sys.path``), so the benchmark
measures the files exactly as the tests run them. Everything lives under one prefix directory:
the rendered site, a main config around it, the logs, nginx's temp paths and a throwaway
certificate; nothing system-wide is touched. Starting and stopping the process is the caller's
(pytest's process groups, the bench's harness); this module says what to run and when it listens.

Also HTTPS S3 as production has it: ``make_authority`` is a throwaway private CA and a server
certificate it signed for 127.0.0.1, and ``tls_front`` an nginx that terminates TLS with it in
front of a plain-HTTP S3 server (moto), as a load balancer in front of MinIO or Ceph does
(``tests/test_s3_tls.py``, and ``bench/harness.py`` for ``--s3-tls``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NGINX: Final = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
DEPLOY: Final = Path(__file__).resolve().parent.parent / "deploy"
HOST: Final = "127.0.0.1"
PLACEHOLDER: Final = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")  # nginx's own variables are lower case
MAIN_CONFIG: Final = "nginx-main.conf"
START_TIMEOUT: Final = 15.0


class NginxError(Exception):
    """nginx did not start listening; the message says why (with its error log)."""


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill every ``${NAME}``; a placeholder without a value is an error, not a silent blank."""
    missing = set(PLACEHOLDER.findall(template)) - values.keys()
    if missing:
        raise KeyError(f"no value for {sorted(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def main_config(prefix: Path, site: Path, *, access_log: bool = True) -> str:
    """What Debian's /etc/nginx/nginx.conf puts around conf.d/*.conf, every path inside ``prefix``."""
    log = f"{prefix}/access.log" if access_log else "off"
    return f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    access_log {log};
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    include {site};
}}
"""


@dataclass(frozen=True)
class Tls:
    cert: Path
    key: Path
    context: ssl.SSLContext  # a client context that trusts ``cert``


def make_tls(directory: Path) -> Tls:
    """A throwaway self-signed certificate for 127.0.0.1 (the shipped files load one even when a
    bench listens plain HTTP)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgproxy nginx on loopback")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(cafile=str(cert_path))
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT  # a bare self-signed root, not a CA's chain
    return Tls(cert_path, key_path, context)


@dataclass(frozen=True)
class Authority:
    """A throwaway CA and a server certificate it signed, for 127.0.0.1."""

    ca: Path  # the CA's certificate (PEM): what a client is given as its ca_bundle
    cert: Path  # the server's certificate (PEM), signed by the CA
    key: Path  # the server's private key (PEM)

    def context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


def key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA's (certificate and CRL signing) or a TLS server's (digital signature) key usage."""
    return x509.KeyUsage(digital_signature=not signs_certificates, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=signs_certificates, crl_sign=signs_certificates,
                         encipher_only=False, decipher_only=False)


def make_authority(directory: Path, name: str = "imgproxy throwaway test CA") -> Authority:
    """A CA (``name``) and a server certificate it signed for 127.0.0.1, valid for a day: both
    with the extensions a strict verifier wants (key usages, key identifiers, SAN)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(signs_certificates=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        # The IP for Python's check; the same text as a DNS name for nginx's (X509_check_host).
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)),
                                                    x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    authority = Authority(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    authority.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    authority.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    authority.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return authority


def tls_front(prefix: Path, port: int, upstream: str, authority: Authority) -> Path:
    """A main config for nginx terminating TLS on ``port`` (``authority``'s server certificate)
    in front of ``upstream`` (``host:port``, plain HTTP), passing requests and bodies through
    as sent (path, query and Host untouched, so signatures hold); returns its path."""
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / "tls_front.conf"
    site.write_text(f"""
upstream s3 {{
    server {upstream};
    keepalive 64;
}}
server {{
    listen {HOST}:{port} ssl;
    ssl_certificate {authority.cert};
    ssl_certificate_key {authority.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:s3_tls:1m;
    keepalive_requests 100000;
    merge_slashes off;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    # Unbuffered, each read from moto (at most this much) goes out as its own TLS record: the
    # default (one 4 KiB page) made 4 KiB records, 680 of them per 2.7 MB object, where S3 and
    # other TLS servers send full 16 KiB records; the client pays per record.
    proxy_buffer_size 16k;
    proxy_buffers 4 16k;  # (nginx -t: busy buffers, 2 x proxy_buffer_size, must fit in them)
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_read_timeout 120s;
    location / {{
        proxy_pass http://s3;
    }}
}}
""", encoding="utf-8")
    main = prefix / MAIN_CONFIG
    main.write_text(main_config(prefix, site, access_log=False), encoding="utf-8")
    return main


SYSTEM_CA_BUNDLE: Final = "/etc/ssl/certs/ca-certificates.crt"  # Debian's; the shipped default


def site_values(prefix: Path, port: int, imgproxy: str, tls: Tls,
                s3_ca_bundle: str = SYSTEM_CA_BUNDLE) -> dict[str, str]:
    """The placeholders of the shipped files; ``imgproxy`` is where it listens (``host:port``);
    ``s3_ca_bundle`` what the accel fetch trusts for an https S3 endpoint."""
    return {
        "LISTEN": f"{HOST}:{port}",
        "SERVER_NAME": HOST,
        "TLS_CERT": str(tls.cert),
        "TLS_KEY": str(tls.key),
        "IMGPROXY": imgproxy,
        "RESOLVER": HOST,  # never asked: the presigned URLs name 127.0.0.1
        "LOG_DIR": str(prefix),
        "S3_CA_BUNDLE": s3_ca_bundle,
    }


def prepare(prefix: Path, site_name: str, values: Mapping[str, str], template: str | None = None) -> Path:
    """Render ``template`` (default: the shipped ``deploy/<site_name>``) into ``prefix/<site_name>``
    and wrap it in a main config; returns the main config's path."""
    if template is None:
        template = (DEPLOY / site_name).read_text(encoding="utf-8")
    prefix.mkdir(parents=True, exist_ok=True)
    site = prefix / site_name
    site.write_text(render(template, values), encoding="utf-8")
    main = prefix / MAIN_CONFIG
    main.write_text(main_config(prefix, site), encoding="utf-8")
    return main


def command(prefix: Path, main: Path, *extra: str) -> list[str]:
    """nginx in the foreground on ``main``, everything under ``prefix`` (``extra``: e.g. ``-t``)."""
    assert NGINX is not None, "the nginx binary is not installed"
    return [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(main), *extra]


def check_config(prefix: Path, main: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on the prepared files (its verdict is in stderr)."""
    return subprocess.run(command(prefix, main, "-t"), capture_output=True, text=True,
                          timeout=START_TIMEOUT, check=False)


def wait_until_listening(prefix: Path, port: int, exit_code: Callable[[], int | None],
                         ready: Callable[[], bool] | None = None, timeout: float = START_TIMEOUT) -> None:
    """Until ``port`` accepts a connection (once ``ready()`` says so, if given); ``exit_code`` is
    the process's ``poll``: an nginx that exits, or does not listen in time, is a NginxError."""
    deadline = time.monotonic() + timeout
    while True:
        if (code := exit_code()) is not None:
            log = prefix / "error.log"
            raise NginxError(f"nginx exited with {code} during start-up\n--- error.log\n"
                             f"{log.read_text(errors='replace') if log.exists() else ''}")
        if ready is None or ready():
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
                return
        if time.monotonic() > deadline:
            raise NginxError(f"nginx did not listen on {port} within {timeout:g}s")
        time.sleep(0.05)
