import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from config import ConfigError, Secret, load_settings, parse_limits

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_match_the_documented_ones():
    s = load_settings({})
    assert s.app_env == "development"
    assert s.retell_api_base == "https://api.retellai.com"
    assert s.retell_api_version == "v3"
    assert s.retell_gateway_base == "https://api.retellai.com/webrtc-proxy"
    assert (s.upstream_connect_timeout, s.upstream_read_timeout) == (3.0, 10.0)
    assert s.rate_limit_per_ip == ((10, 60), (100, 900))
    assert s.rate_limit_per_origin_day == 1000
    assert s.redis_key_prefix == "widget:"
    assert s.usage_stream_maxlen == 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 per minute;100 per 15 minutes", ((10, 60), (100, 900))),
        ("5/second", ((5, 1),)),
        ("1000 per day", ((1000, 86400),)),
        ("", ()),
    ],
)
def test_parse_limits(text, expected):
    assert parse_limits(text) == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETELL_API_VERSION", "v4"),
        ("REDIS_URL", "http://localhost"),
        ("UPSTREAM_READ_TIMEOUT", "-1"),
        ("UPSTREAM_CONNECT_TIMEOUT", "soon"),
        ("APP_ENV", "staging"),
        ("RATE_LIMIT_PER_IP", "lots"),
        ("USAGE_IP_MODE", "everything"),
        ("MAX_CALL_DURATION_MS", "10"),
    ],
)
def test_invalid_values_are_refused_with_the_setting_named(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_production_requires_key_redis_and_hash_key():
    with pytest.raises(ConfigError) as info:
        load_settings({"APP_ENV": "production"})
    message = str(info.value)
    for name in ("RETELL_API_KEY", "REDIS_URL", "USAGE_IP_HASH_KEY"):
        assert name in message
    ok = load_settings(
        {
            "APP_ENV": "production",
            "RETELL_API_KEY": "key_x",
            "REDIS_URL": "redis://r:6379/0",
            "USAGE_IP_HASH_KEY": "h",
        }
    )
    assert ok.production and not ok.insecure_origins_allowed


def test_secret_never_shows_in_repr():
    s = load_settings({"RETELL_API_KEY": "key_supersecret_value"})
    assert "key_supersecret_value" not in repr(s)
    assert "key_supersecret_value" not in str(s.retell_api_key)
    assert s.retell_api_key.reveal() == "key_supersecret_value"
    assert not Secret("")


def test_wsgi_refuses_to_start_in_production_with_one_line():
    env = {"APP_ENV": "production", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: APP_ENV=production needs")


def test_every_setting_is_in_the_readme_configuration_table():
    from config import FIELDS

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Redis keys")]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))
    deploy = "".join(
        (ROOT / path).read_text() for path in ("deploy/gunicorn.conf.py", "devtools/run_local.py")
    )
    read_by_deploy = set(re.findall(r'"((?:GUNICORN|RUN|DEMO|WIDGET)_[A-Z_]+)"', deploy))
    assert documented == set(FIELDS) | read_by_deploy


@pytest.mark.parametrize("value", ["warning", "WARNING", "Warning", " warning "])
def test_log_level_accepts_either_case(value):
    assert load_settings({"LOG_LEVEL": value}).log_level == "WARNING"


def test_log_level_still_refuses_unknown_names():
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_settings({"LOG_LEVEL": "verbose"})


def _gunicorn_conf(monkeypatch, **env) -> dict:
    for name in ("UPSTREAM_CONNECT_TIMEOUT", "UPSTREAM_READ_TIMEOUT", "GUNICORN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))


@pytest.mark.parametrize("value", ["WARNING", "warning", "Warning"])
def test_gunicorn_log_level_accepts_either_case(monkeypatch, value):
    """gunicorn wants lower case and silently logs at info for a name it does not know."""
    assert _gunicorn_conf(monkeypatch, GUNICORN_LOG_LEVEL=value)["loglevel"] == "warning"


def test_gunicorn_log_level_refuses_unknown_names(monkeypatch):
    with pytest.raises(RuntimeError, match="GUNICORN_LOG_LEVEL"):
        _gunicorn_conf(monkeypatch, GUNICORN_LOG_LEVEL="verbose")


def test_one_log_level_value_suits_both(monkeypatch):
    for value in ("DEBUG", "info", "Warning", "error"):
        app_level = load_settings({"LOG_LEVEL": value}).log_level
        gunicorn_level = _gunicorn_conf(monkeypatch, GUNICORN_LOG_LEVEL=value)["loglevel"]
        assert app_level.lower() == gunicorn_level


@pytest.mark.parametrize(
    ("default", "needed"),
    [("pow", "POW_HMAC_KEY"), ("turnstile", "TURNSTILE_SECRET_KEY"),
     ("recaptcha", "RECAPTCHA_SITE_KEY")],
)  # fmt: skip
def test_production_refuses_a_verify_default_without_its_keys(default, needed):
    env = {"APP_ENV": "production", "RETELL_API_KEY": "k", "REDIS_URL": "redis://x:1/0",
           "USAGE_IP_HASH_KEY": "h", "VERIFY_DEFAULT": default,
           "TURNSTILE_SITE_KEY": "s", "RECAPTCHA_SECRET_KEY": "r"}  # fmt: skip
    with pytest.raises(ConfigError, match=needed):
        load_settings(env)
    assert load_settings({**env, "VERIFY_DEFAULT": "none"}).verify_default == "none"


def test_every_secret_is_redacted_from_logs():
    settings = load_settings({"RETELL_API_KEY": "k1", "TURNSTILE_SECRET_KEY": "t2",
                              "POW_HMAC_KEY": "p3", "HCAPTCHA_SECRET_KEY": "h4"})  # fmt: skip
    assert set(settings.secrets) == {"k1", "t2", "p3", "h4"}
    assert "t2" not in repr(settings) and "p3" not in repr(settings)
