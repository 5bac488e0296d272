"""Health, readiness and widget-version."""

import json

import pytest


def test_health_is_always_ok(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    assert response.json["timestamp"].endswith("Z")
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_ready_reports_each_component(client):
    response = client.get("/api/health/ready")
    assert response.status_code == 200, response.json
    assert response.json["components"]["redis"] == {"status": "ok"}
    assert response.json["components"]["retell"]["status"] == "ok"


def test_ready_is_503_without_an_api_key(make_app):
    response = make_app(RETELL_API_KEY="").test_client().get("/api/health/ready")
    assert response.status_code == 503
    assert response.json["components"]["retell"]["status"] == "error"


def test_ready_is_503_quickly_when_redis_is_unreachable(make_app):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0").test_client()
    started = time.monotonic()
    response = client.get("/api/health/ready")
    assert time.monotonic() - started < 1
    assert response.status_code == 503
    assert response.json["components"]["redis"]["status"] == "error"


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": "1.2.0", "files": {}}))
    return path


@pytest.mark.parametrize(
    ("query", "current", "update"),
    [("?v=1.0.0", "1.0.0", True), ("?v=v1.2.0", "v1.2.0", False), ("?v=2.0", "2.0", False),
     ("", None, False), ("?v=", None, False)],
)  # fmt: skip
def test_widget_version(make_app, manifest, query, current, update):
    client = make_app(
        WIDGET_MANIFEST=str(manifest), WIDGET_CHANGELOG_URL="https://x/ch"
    ).test_client()
    response = client.get(f"/api/widget-version{query}")
    assert response.status_code == 200
    assert response.json == {
        "current": current,
        "latest": "1.2.0",
        "update_available": update,
        "changelog": "https://x/ch",
    }
    assert response.headers["Cache-Control"] == "public, max-age=300"


def test_widget_version_follows_a_rebuilt_manifest(make_app, manifest):
    import os

    client = make_app(WIDGET_MANIFEST=str(manifest)).test_client()
    assert client.get("/api/widget-version").json["latest"] == "1.2.0"
    manifest.write_text(json.dumps({"version": "1.3.0"}))
    os.utime(manifest, (1, 1))
    assert client.get("/api/widget-version").json["latest"] == "1.3.0"


def test_widget_version_rejects_garbage(client):
    response = client.get("/api/widget-version?v=<script>")
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_widget_version_override(make_app, manifest):
    client = make_app(WIDGET_MANIFEST=str(manifest), WIDGET_LATEST_VERSION="9.0.0").test_client()
    assert client.get("/api/widget-version?v=1.0.0").json["latest"] == "9.0.0"
