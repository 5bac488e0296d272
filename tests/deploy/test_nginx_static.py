"""nginx serves static/dist the way a CDN would, and only /api/ reaches gunicorn."""

from __future__ import annotations

import gzip

import pytest

from tests.deploy.conftest import SECRET
from tests.deploy.helpers import fetch

pytestmark = pytest.mark.nginx

IMMUTABLE = "public, max-age=31536000, immutable"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def assert_security_headers(reply):
    for name, value in SECURITY_HEADERS.items():
        assert reply.header_all(name) == [value], name
    assert "default-src 'none'" in reply.header("Content-Security-Policy")


def assert_cdn_headers(reply):
    assert_security_headers(reply)
    assert reply.header_all("Access-Control-Allow-Origin") == ["*"]
    assert reply.header("Cross-Origin-Resource-Policy") == "cross-origin"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/retell-widget.js", "text/javascript; charset=utf-8"),
        ("/v1/retell-widget.css", "text/css; charset=utf-8"),
        ("/v1/engine-gateway.js", "text/javascript; charset=utf-8"),
    ],
)
def test_versioned_files_are_immutable_with_cdn_headers(static_nginx, dist_dir, path, content_type):
    reply = fetch(static_nginx.port, path)
    assert reply.status == 200
    assert reply.body == (dist_dir / path.lstrip("/")).read_bytes()
    assert reply.header("Content-Type") == content_type
    assert reply.header_all("Cache-Control") == [IMMUTABLE]
    assert reply.header("ETag")
    assert_cdn_headers(reply)


def test_latest_serves_the_same_bytes_with_a_short_cache(static_nginx, dist_dir):
    versioned = fetch(static_nginx.port, "/v1/retell-widget.js")
    latest = fetch(static_nginx.port, "/latest/retell-widget.js")
    assert latest.status == 200
    assert latest.body == versioned.body
    [cache] = latest.header_all("Cache-Control")
    assert "immutable" not in cache
    max_age = int(cache.split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= 3600
    assert latest.header("Content-Type") == "text/javascript; charset=utf-8"
    assert_cdn_headers(latest)


@pytest.mark.parametrize("path", ["/v1/retell-widget.js", "/latest/retell-widget.js"])
def test_conditional_request_gets_304_with_the_same_headers(static_nginx, path):
    first = fetch(static_nginx.port, path)
    reply = fetch(static_nginx.port, path, headers={"If-None-Match": first.header("ETag")})
    assert reply.status == 304
    assert reply.body == b""
    assert reply.header_all("Cache-Control") == first.header_all("Cache-Control")
    assert_cdn_headers(reply)


@pytest.mark.parametrize(
    "path", ["/v1/missing.js", "/latest/missing.js", "/v1/", "/v1/sub/", "/latest/", "/v2/x.js"]
)
def test_missing_files_and_directories_404_without_listing_or_long_cache(static_nginx, path):
    reply = fetch(static_nginx.port, path)
    assert reply.status == 404
    assert reply.json()["error"] == "not_found"
    assert b"Index of" not in reply.body
    [cache] = reply.header_all("Cache-Control")
    assert "immutable" not in cache and "max-age=60" in cache
    assert_cdn_headers(reply)


@pytest.mark.parametrize("path", ["/v1/retell-widget.js", "/v1/retell-widget.css"])
def test_gzip_when_accepted_and_vary_always(static_nginx, dist_dir, path):
    plain = fetch(static_nginx.port, path)
    zipped = fetch(static_nginx.port, path, headers={"Accept-Encoding": "gzip"})
    assert zipped.status == 200
    assert zipped.header("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped.body) == (dist_dir / path.lstrip("/")).read_bytes()
    assert len(zipped.body) < len(plain.body)
    assert plain.header("Content-Encoding") is None
    for reply in (plain, zipped):
        assert "Accept-Encoding" in reply.header("Vary")


def test_gzip_for_json(static_nginx, dist_dir):
    (dist_dir / "v1" / "big.json").write_text('{"k": "' + "x" * 2000 + '"}')
    reply = fetch(static_nginx.port, "/v1/big.json", headers={"Accept-Encoding": "gzip"})
    assert reply.header("Content-Type") == "application/json; charset=utf-8"
    assert reply.header("Content-Encoding") == "gzip"


# Climbing above / is refused by nginx's URI parser (400) before any location is
# chosen; climbing out of /v1/ only reaches `location /` (404). Neither is proxied.
@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/../../etc/passwd", 400),
        ("/v1/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/v1/..%2f..%2fetc%2fpasswd", 400),
        ("/latest/../../secret.txt", 400),
        ("/v1/../secret.txt", 404),
        ("/latest/%2e%2e/secret.txt", 404),
        ("/v1/%2e%2e/%2e%2e/secret.txt", 400),
        ("/v1/..%5c..%5csecret.txt", 404),
        ("/v1/%252e%252e/secret.txt", 404),
        ("/v1/....//secret.txt", 404),
        ("/api/../secret.txt", 404),
        ("/api/%2e%2e/etc/passwd", 404),
        ("/latest/../api/../../etc/passwd", 400),
    ],
)
def test_traversal_is_refused_and_never_proxied(static_nginx, upstream, path, status):
    before = len(upstream.requests)
    reply = fetch(static_nginx.port, path)
    assert reply.status == status
    assert SECRET.encode() not in reply.body
    assert b"root:" not in reply.body
    assert len(upstream.requests) == before
    assert_security_headers(reply)


def test_only_api_is_proxied(static_nginx, upstream):
    before = len(upstream.requests)
    for path in ("/", "/index.html", "/static/dist/manifest.json", "/wsgi.py", "/apix"):
        assert fetch(static_nginx.port, path).status == 404
    assert len(upstream.requests) == before
    assert fetch(static_nginx.port, "/api/health").status == 200
    assert upstream.requests[-1]["path"] == "/api/health"
