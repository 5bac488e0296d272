"""The hardened systemd unit: valid for systemd, and the settings that matter are there."""

from __future__ import annotations

import configparser
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "widget-gateway.service"


def unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_is_hardened_and_stops_gracefully(monkeypatch):
    unit = unit_values()
    for key, value in {
        "User": "widget-gateway",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "Restart": "on-failure",
        "CapabilityBoundingSet": "",
        "KillMode": "mixed",
    }.items():
        assert unit[key] == [value], key
    assert unit["ExecStart"][0].endswith("gunicorn -c deploy/gunicorn.conf.py wsgi:app")
    assert "GUNICORN_BIND=unix:/run/widget-gateway/gunicorn.sock" in unit["Environment"]
    assert unit["RuntimeDirectory"] == ["widget-gateway"]
    # systemd must not SIGKILL before gunicorn's own graceful stop has had its time.
    for name in ("UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT", "GUNICORN_GRACEFUL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    conf = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert int(unit["TimeoutStopSec"][0]) > conf["graceful_timeout"]


def test_env_example_sets_what_production_requires():
    text = (ROOT / "deploy" / "systemd" / "widget-gateway.env.example").read_text()
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    parser.read_string("[env]\n" + text)
    env = dict(parser["env"])
    assert env["APP_ENV"] == "production"
    for name in ("RETELL_API_KEY", "REDIS_URL", "USAGE_IP_HASH_KEY"):
        assert env[name], name
    assert env["TRUSTED_PROXY_COUNT"] == "1"
    from config import load_settings

    settings = load_settings(environ=env)
    assert settings.production and settings.trusted_proxy_count == 1


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_accepts_the_unit(tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    text = UNIT.read_text().replace("/srv/widget-gateway/app/.venv/bin/gunicorn", str(gunicorn))
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace("/srv/widget-gateway/app", str(ROOT)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(copy) in line or "Unknown" in line or "ignoring" in line
    ]
    assert result.returncode == 0, result.stderr
    assert problems == []
