"""The deploy files themselves: timeout ordering, gunicorn settings, the TLS variant."""

from __future__ import annotations

import datetime
import http.client
import re
import runpy
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from config import Settings
from deploy.nginx.render import (
    SiteSettings,
    nginx_command,
    render_files,
    write_local,
    write_site,
)
from devtools.ports import free_port, wait_for_port
from tests.deploy.helpers import fetch, run_nginx, stop_process

ROOT = Path(__file__).resolve().parents[2]
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"


def load_gunicorn_conf(monkeypatch, **env) -> dict:
    for name in ("UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT", "GUNICORN_TIMEOUT",
                 "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_BIND", "GUNICORN_WORKERS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def test_timeouts_are_ordered_inside_out(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    app = Settings()
    upstream = app.upstream_connect_timeout + app.upstream_read_timeout
    site = render_files(SiteSettings())["proxy.conf"]
    nginx_read = int(re.search(r"proxy_read_timeout (\d+)s;", site).group(1))
    assert upstream < conf["timeout"] < nginx_read
    # A reload or stop lets an in-flight create finish.
    assert conf["graceful_timeout"] > upstream


def test_gunicorn_refuses_misordered_timeouts(monkeypatch):
    with pytest.raises(RuntimeError, match="timeouts out of order"):
        load_gunicorn_conf(monkeypatch, UPSTREAM_READ_TIMEOUT="30")


def test_gunicorn_settings(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    assert conf["worker_class"] == "gevent" and conf["worker_connections"] >= 256
    fallback = load_gunicorn_conf(monkeypatch, GUNICORN_WORKER_CLASS="gthread")
    assert fallback["worker_class"] == "gthread" and fallback["threads"] > 1
    assert conf["workers"] >= 2
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    assert conf["control_socket_disable"] is True
    assert conf["logger_class"].__name__ == "JsonAccessLogger"
    unix = load_gunicorn_conf(monkeypatch, GUNICORN_BIND="unix:/run/x/gunicorn.sock")
    assert unix["bind"] == ["unix:/run/x/gunicorn.sock"]


def _expand(text: str, files: dict) -> str:
    return re.sub(r"include /c/([\w.-]+);", lambda m: _expand(files[m.group(1)], files), text)


def test_no_location_adds_headers_without_the_security_snippet():
    """nginx drops server-level add_header in any location that has its own."""
    for tls in (True, False):
        files = render_files(SiteSettings(tls=tls, conf_dir="/c"))
        blocks = re.findall(r"location [^{]+\{(.*?)\n    \}", files["site.conf"], re.S)
        assert len(blocks) >= 8
        for body in blocks:
            body = _expand(body, files)
            if "add_header" in body:
                assert 'add_header X-Content-Type-Options "nosniff" always;' in body, body
                assert "Content-Security-Policy" in body
                assert ("Strict-Transport-Security" in body) is tls
        assert ("Strict-Transport-Security" in files["security-headers.conf"]) is tls


def test_tls12_ciphers_are_ecdhe_with_aead_only_and_documented():
    """Mozilla "intermediate": forward secrecy and authenticated encryption, nothing else."""
    site = render_files(SiteSettings())["site.conf"]
    [ciphers] = re.findall(r"^\s*ssl_ciphers (\S+);", site, re.M)
    suites = ciphers.split(":")
    assert len(suites) >= 4
    for suite in suites:
        assert suite.startswith("ECDHE-"), suite
        assert suite.endswith(("-GCM-SHA256", "-GCM-SHA384", "-CHACHA20-POLY1305")), suite
    assert ciphers in (ROOT / "deploy" / "README.md").read_text()
    assert "ssl_ciphers" not in render_files(SiteSettings(tls=False))["site.conf"]


def test_every_server_block_hides_the_nginx_version(tmp_path):
    """gixy: the local site and make run's demo client site both say server_tokens off."""
    for tls in (True, False):
        site = render_files(SiteSettings(tls=tls))["site.conf"]
        assert site.count("server_tokens off;") == site.count("\nserver {") == (2 if tls else 1)
    main = write_local(
        tmp_path, port=free_port(), upstream="127.0.0.1:9", dist_root=str(tmp_path),
        demo_port=free_port(), demo_root=str(tmp_path),
    )  # fmt: skip
    text = main.read_text()
    assert text.count("server {") == 1
    assert text.count("server_tokens off;") == 1


@pytest.mark.nginx
def test_demo_site_sends_no_nginx_version(tmp_path, dist_dir, need_nginx):
    demo_root = tmp_path / "demo"
    demo_root.mkdir()
    (demo_root / "index.html").write_text("<!doctype html><title>demo</title>")
    demo_port = free_port()
    with run_nginx(
        tmp_path / "nginx", upstream="127.0.0.1:9", dist_root=dist_dir,
        demo_port=demo_port, demo_root=str(demo_root),
    ) as nginx:  # fmt: skip
        for port in (nginx.port, demo_port):
            reply = fetch(port, "/")
            assert reply.header("Server") == "nginx", port


def _tls12_handshake(port: int, cafile: Path, ciphers: str) -> str:
    """The cipher a TLS 1.2 client offering only `ciphers` gets; ssl.SSLError if none."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.check_hostname = False
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        return tls.cipher()[0]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.nginx
def test_production_tls_variant_serves_https_and_redirects_http(tmp_path, dist_dir, need_nginx):
    cert, key = _self_signed(tmp_path)
    https_port, http_port = free_port(), free_port()
    conf_dir = tmp_path / "conf"
    (tmp_path / "tmp").mkdir()
    (tmp_path / "acme" / ".well-known" / "acme-challenge").mkdir(parents=True)
    (tmp_path / "acme" / ".well-known" / "acme-challenge" / "tok").write_text("proof")
    site = write_site(
        SiteSettings(
            server_name="localhost",
            listen=f"127.0.0.1:{https_port}",
            http_listen=f"127.0.0.1:{http_port}",
            ipv6=False,
            ssl_certificate=str(cert),
            ssl_certificate_key=str(key),
            acme_root=str(tmp_path / "acme"),
            upstream_servers=(f"127.0.0.1:{free_port()}",),
            dist_root=str(dist_dir),
            access_log=str(tmp_path / "access.log"),
            conf_dir=str(conf_dir),
        ),
        conf_dir,
    )
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"user root;\ndaemon off;\npid {tmp_path}/nginx.pid;\nevents {{}}\n"
        f"http {{ client_body_temp_path {tmp_path}/tmp; proxy_temp_path {tmp_path}/tmp;\n"
        f"include {site}; }}\n"
    )
    check = subprocess.run(nginx_command(tmp_path, main) + ["-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(nginx_command(tmp_path, main), stderr=subprocess.DEVNULL)
    try:
        wait_for_port(https_port, process=proc)
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", https_port, context=context, timeout=5)
        conn.request("GET", "/v1/retell-widget.js")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        conn.close()

        # TLS 1.2: only ECDHE with AEAD; a client offering only CBC suites is refused.
        for cbc in ("ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"):
            with pytest.raises(ssl.SSLError):
                _tls12_handshake(https_port, cert, cbc)
        site_ciphers = re.search(r"ssl_ciphers (\S+);", site.read_text()).group(1).split(":")
        assert _tls12_handshake(https_port, cert, "ALL") in site_ciphers

        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        plain.request("GET", "/v1/retell-widget.js?x=1", headers={"Host": "localhost"})
        redirect = plain.getresponse()
        assert redirect.status == 301
        assert redirect.headers["Location"] == "https://localhost/v1/retell-widget.js?x=1"
        plain.close()
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=5)
        plain.request("GET", "/.well-known/acme-challenge/tok")
        acme = plain.getresponse()
        assert (acme.status, acme.read()) == (200, b"proof")
        plain.close()
    finally:
        stop_process(proc)
