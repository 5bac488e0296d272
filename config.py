"""Settings, read once from the environment at start-up.

Every setting is documented in README.md's configuration table; keep the two in step.
Nothing else in the code reads os.environ.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent

LIMIT_PART = re.compile(
    r"^\s*(\d+)\s*(?:per|/)\s*(\d+)?\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE
)
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line for operators."""


class Secret:
    """Holds a secret so that repr(), str() and logging never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def parse_limits(text: str) -> tuple[tuple[int, int], ...]:
    """'10 per minute;100 per 15 minutes' -> ((10, 60), (100, 900)): (count, window seconds)."""
    limits = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        match = LIMIT_PART.match(part)
        if not match:
            raise ValueError(f"cannot read limit {part!r} (expected e.g. '10 per minute')")
        count, multiplier, unit = match.groups()
        limits.append((int(count), int(multiplier or 1) * UNIT_SECONDS[unit.lower()]))
    return tuple(limits)


@dataclasses.dataclass(frozen=True)
class Settings:
    app_env: str = "development"
    retell_api_key: Secret = Secret("")
    retell_api_base: str = "https://api.retellai.com"
    retell_api_version: str = "v3"
    retell_gateway_base: str = "https://api.retellai.com/webrtc-proxy"
    upstream_connect_timeout: float = 3.0
    upstream_read_timeout: float = 10.0
    max_call_duration_ms: int | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "widget:"
    redis_socket_timeout: float = 0.5
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_username: str = ""
    redis_sentinel_password: Secret = Secret("")
    redis_username: str = ""
    redis_password: Secret = Secret("")
    redis_tls: bool = False
    redis_tls_ca_file: Path | None = None
    redis_cluster: bool = False
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 100
    allow_insecure_origins: bool = False
    cors_max_age: int = 600
    rate_limit_per_ip: tuple[tuple[int, int], ...] = ((10, 60), (100, 900))
    rate_limit_per_origin_day: int = 1000
    rate_limit_per_agent_day: int = 0
    minutes_per_origin_day: int = 0
    minutes_per_origin_month: int = 0
    minutes_per_agent_day: int = 0
    minutes_per_agent_month: int = 0
    concurrent_calls_per_origin: int = 0
    concurrent_calls_total: int = 0
    rate_limit_chats_per_ip: tuple[tuple[int, int], ...] = ((5, 60), (20, 3600))
    rate_limit_chats_per_origin_day: int = 1000
    rate_limit_chats_per_agent_day: int = 0
    rate_limit_feedback_per_ip: tuple[tuple[int, int], ...] = ((10, 60),)
    chat_read_timeout: float = 60.0
    chat_token_ttl: int = 7200
    chat_max_messages: int = 50
    chat_messages_per_minute: int = 10
    transcript_default: bool = False
    retell_monitor_base: str = "wss://api.retellai.com"
    verify_default: str = "none"
    turnstile_site_key: str = ""
    turnstile_secret_key: Secret = Secret("")
    turnstile_verify_url: str = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
    hcaptcha_site_key: str = ""
    hcaptcha_secret_key: Secret = Secret("")
    hcaptcha_verify_url: str = "https://api.hcaptcha.com/siteverify"
    recaptcha_site_key: str = ""
    recaptcha_secret_key: Secret = Secret("")
    recaptcha_verify_url: str = "https://www.google.com/recaptcha/api/siteverify"
    recaptcha_min_score: float = 0.5
    verify_timeout: float = 3.0
    pow_difficulty: int = 50_000
    pow_hmac_key: Secret = Secret("")
    token_signing_key: Secret = Secret("")
    trusted_proxy_count: int = 1
    usage_stream_maxlen: int = 1_000_000
    usage_ip_mode: str = "hash"
    usage_ip_hash_key: Secret = Secret("")
    usage_spool_dir: Path | None = None
    metrics_enabled: bool = True
    metrics_allow_from: tuple = LOOPBACK  # ip networks that may read /metrics
    widget_manifest: Path = ROOT / "static" / "dist" / "manifest.json"
    widget_latest_version: str = ""
    widget_changelog_url: str = ""
    log_level: str = "INFO"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret's value, for the log formatter to redact."""
        values = [v.reveal() for v in vars(self).values() if isinstance(v, Secret)]
        return tuple(v for v in values if v)

    @property
    def spend_limited(self) -> bool:
        """A default minute budget or concurrency cap is set (webhooks then matter)."""
        return any((self.minutes_per_origin_day, self.minutes_per_origin_month,
                    self.minutes_per_agent_day, self.minutes_per_agent_month,
                    self.concurrent_calls_per_origin, self.concurrent_calls_total))  # fmt: skip

    @property
    def max_call_ms(self) -> int:
        """The longest a call can run: MAX_CALL_DURATION_MS, else Retell's default hour."""
        return self.max_call_duration_ms or 3_600_000

    @property
    def production(self) -> bool:
        return self.app_env == "production"

    @property
    def insecure_origins_allowed(self) -> bool:
        return self.allow_insecure_origins or not self.production


# env var -> (field, parser). Parsers raise ValueError with a readable message.
def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected 1/0, true/false, yes/no")


def _positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number <= 600:
        raise ValueError("expected seconds between 0 and 600")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("expected a whole number >= 0")
    return number


def _choice(*choices: str):
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _log_level(value: str) -> str:
    """Either case, like GUNICORN_LOG_LEVEL (which gunicorn wants in lower case)."""
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR (either case)")
    return level


def _http_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http(s) URL")
    return value.rstrip("/")


def _ws_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError("expected a ws(s) URL")
    return value.rstrip("/")


def _upstream_wait(value: str) -> float:
    """Retell's SDKs wait up to 300 s for a chat turn (tools may run)."""
    number = float(value)
    if not 0 < number <= 300:
        raise ValueError("expected seconds between 0 and 300")
    return number


def _token_ttl(value: str) -> int:
    number = int(value)
    if not 60 <= number <= 86_400:
        raise ValueError("expected seconds between 60 and 86400")
    return number


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return value


def _sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """'10.0.0.1:26379,10.0.0.2:26379' (or [v6]:port) -> ((host, port), ...)."""
    nodes = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cannot read {part!r} (expected host:port)")
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)


def _sentinel_master(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value.strip()):
        raise ValueError("expected the name Sentinel monitors the primary by")
    return value.strip()


def _wait_timeout(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 60_000:
        raise ValueError("expected milliseconds between 1 and 60000")
    return number


def hash_tag(prefix: str) -> str:
    """What Redis Cluster hashes for keys starting with `prefix`: '' unless its first '{'
    is closed by a '}' inside the prefix with something between (then every key of ours
    is in one slot)."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if end > start + 1 else ""


def _check_redis(settings: Settings, named: set[str]) -> None:
    """How the settings that choose a Redis fit together; one line when they do not."""
    if settings.redis_sentinels and "REDIS_URL" in named:
        raise ConfigError("set REDIS_URL (one node or a cluster node) or REDIS_SENTINELS, not both")
    if settings.redis_cluster and settings.redis_sentinels:
        raise ConfigError("REDIS_CLUSTER=1 takes REDIS_URL (a cluster node), not REDIS_SENTINELS")
    if settings.redis_cluster and not hash_tag(settings.redis_key_prefix):
        raise ConfigError(
            "REDIS_CLUSTER=1 needs a hash-tagged REDIS_KEY_PREFIX such as {widget}: "
            "(every key of a request must be in one slot)"
        )
    if settings.redis_cluster and urlsplit(settings.redis_url).scheme == "unix":
        raise ConfigError("REDIS_CLUSTER=1 needs a redis:// or rediss:// REDIS_URL")
    if settings.redis_tls and not settings.redis_sentinels:
        raise ConfigError("REDIS_TLS is for REDIS_SENTINELS; with REDIS_URL use rediss://")
    wait_ms = settings.redis_wait_timeout_ms
    if settings.redis_wait_replicas and wait_ms >= settings.redis_socket_timeout * 1000:
        raise ConfigError("REDIS_WAIT_TIMEOUT_MS must be below REDIS_SOCKET_TIMEOUT")


def _networks(value: str) -> tuple:
    """'127.0.0.1, 10.0.0.0/24' -> ip networks (a bare address is a /32 or /128)."""
    try:
        return tuple(ipaddress.ip_network(p.strip()) for p in value.split(",") if p.strip())
    except ValueError as exc:
        raise ValueError(f"expected addresses or networks, comma-separated ({exc})") from None


def _score(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("expected a score between 0 and 1")
    return number


def _difficulty(value: str) -> int:
    number = int(value)
    if not 1_000 <= number <= 10_000_000:
        raise ValueError("expected a number between 1000 and 10000000")
    return number


def _call_duration(value: str) -> int | None:
    if not value:
        return None
    number = int(value)
    if not 60_000 <= number <= 7_200_000:
        raise ValueError("expected milliseconds between 60000 and 7200000")
    return number


FIELDS: dict[str, tuple[str, object]] = {
    "APP_ENV": ("app_env", _choice("development", "production")),
    "RETELL_API_KEY": ("retell_api_key", lambda v: Secret(v.strip())),
    "RETELL_API_BASE": ("retell_api_base", _http_base),
    "RETELL_API_VERSION": ("retell_api_version", _choice("v3", "v2")),
    "RETELL_GATEWAY_BASE": ("retell_gateway_base", _http_base),
    "UPSTREAM_CONNECT_TIMEOUT": ("upstream_connect_timeout", _positive_float),
    "UPSTREAM_READ_TIMEOUT": ("upstream_read_timeout", _positive_float),
    "MAX_CALL_DURATION_MS": ("max_call_duration_ms", _call_duration),
    "REDIS_URL": ("redis_url", _redis_url),
    "REDIS_KEY_PREFIX": ("redis_key_prefix", str),
    "REDIS_SOCKET_TIMEOUT": ("redis_socket_timeout", _positive_float),
    "REDIS_SENTINELS": ("redis_sentinels", _sentinels),
    "REDIS_SENTINEL_MASTER": ("redis_sentinel_master", _sentinel_master),
    "REDIS_SENTINEL_USERNAME": ("redis_sentinel_username", str),
    "REDIS_SENTINEL_PASSWORD": ("redis_sentinel_password", lambda v: Secret(v.strip())),
    "REDIS_USERNAME": ("redis_username", str),
    "REDIS_PASSWORD": ("redis_password", lambda v: Secret(v.strip())),
    "REDIS_TLS": ("redis_tls", _bool),
    "REDIS_TLS_CA_FILE": ("redis_tls_ca_file", lambda v: Path(v) if v.strip() else None),
    "REDIS_CLUSTER": ("redis_cluster", _bool),
    "REDIS_WAIT_REPLICAS": ("redis_wait_replicas", _non_negative_int),
    "REDIS_WAIT_TIMEOUT_MS": ("redis_wait_timeout_ms", _wait_timeout),
    "ALLOW_INSECURE_ORIGINS": ("allow_insecure_origins", _bool),
    "CORS_MAX_AGE": ("cors_max_age", _non_negative_int),
    "RATE_LIMIT_PER_IP": ("rate_limit_per_ip", parse_limits),
    "RATE_LIMIT_PER_ORIGIN_DAY": ("rate_limit_per_origin_day", _non_negative_int),
    "RATE_LIMIT_PER_AGENT_DAY": ("rate_limit_per_agent_day", _non_negative_int),
    "MINUTES_PER_ORIGIN_DAY": ("minutes_per_origin_day", _non_negative_int),
    "MINUTES_PER_ORIGIN_MONTH": ("minutes_per_origin_month", _non_negative_int),
    "MINUTES_PER_AGENT_DAY": ("minutes_per_agent_day", _non_negative_int),
    "MINUTES_PER_AGENT_MONTH": ("minutes_per_agent_month", _non_negative_int),
    "CONCURRENT_CALLS_PER_ORIGIN": ("concurrent_calls_per_origin", _non_negative_int),
    "CONCURRENT_CALLS_TOTAL": ("concurrent_calls_total", _non_negative_int),
    "RATE_LIMIT_CHATS_PER_IP": ("rate_limit_chats_per_ip", parse_limits),
    "RATE_LIMIT_CHATS_PER_ORIGIN_DAY": ("rate_limit_chats_per_origin_day", _non_negative_int),
    "RATE_LIMIT_CHATS_PER_AGENT_DAY": ("rate_limit_chats_per_agent_day", _non_negative_int),
    "RATE_LIMIT_FEEDBACK_PER_IP": ("rate_limit_feedback_per_ip", parse_limits),
    "CHAT_READ_TIMEOUT": ("chat_read_timeout", _upstream_wait),
    "CHAT_TOKEN_TTL": ("chat_token_ttl", _token_ttl),
    "CHAT_MAX_MESSAGES": ("chat_max_messages", _non_negative_int),
    "CHAT_MESSAGES_PER_MINUTE": ("chat_messages_per_minute", _non_negative_int),
    "TRANSCRIPT_DEFAULT": ("transcript_default", _bool),
    "RETELL_MONITOR_BASE": ("retell_monitor_base", _ws_base),
    "VERIFY_DEFAULT": (
        "verify_default",
        _choice("none", "pow", "turnstile", "hcaptcha", "recaptcha"),
    ),
    "TURNSTILE_SITE_KEY": ("turnstile_site_key", str),
    "TURNSTILE_SECRET_KEY": ("turnstile_secret_key", lambda v: Secret(v.strip())),
    "TURNSTILE_VERIFY_URL": ("turnstile_verify_url", _http_base),
    "HCAPTCHA_SITE_KEY": ("hcaptcha_site_key", str),
    "HCAPTCHA_SECRET_KEY": ("hcaptcha_secret_key", lambda v: Secret(v.strip())),
    "HCAPTCHA_VERIFY_URL": ("hcaptcha_verify_url", _http_base),
    "RECAPTCHA_SITE_KEY": ("recaptcha_site_key", str),
    "RECAPTCHA_SECRET_KEY": ("recaptcha_secret_key", lambda v: Secret(v.strip())),
    "RECAPTCHA_VERIFY_URL": ("recaptcha_verify_url", _http_base),
    "RECAPTCHA_MIN_SCORE": ("recaptcha_min_score", _score),
    "VERIFY_TIMEOUT": ("verify_timeout", _positive_float),
    "POW_DIFFICULTY": ("pow_difficulty", _difficulty),
    "POW_HMAC_KEY": ("pow_hmac_key", lambda v: Secret(v.strip())),
    "TOKEN_SIGNING_KEY": ("token_signing_key", lambda v: Secret(v.strip())),
    "TRUSTED_PROXY_COUNT": ("trusted_proxy_count", _non_negative_int),
    "USAGE_STREAM_MAXLEN": ("usage_stream_maxlen", _non_negative_int),
    "USAGE_IP_MODE": ("usage_ip_mode", _choice("hash", "truncate", "full", "none")),
    "USAGE_IP_HASH_KEY": ("usage_ip_hash_key", lambda v: Secret(v.strip())),
    "USAGE_SPOOL_DIR": ("usage_spool_dir", lambda v: Path(v) if v.strip() else None),
    "METRICS_ENABLED": ("metrics_enabled", _bool),
    "METRICS_ALLOW_FROM": ("metrics_allow_from", _networks),
    "WIDGET_MANIFEST": ("widget_manifest", Path),
    "WIDGET_LATEST_VERSION": ("widget_latest_version", str),
    "WIDGET_CHANGELOG_URL": ("widget_changelog_url", str),
    "LOG_LEVEL": ("log_level", _log_level),
}
REQUIRED_IN_PRODUCTION = ("RETELL_API_KEY", "REDIS_URL")


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> Settings:
    """Builds Settings from env-style names (environ, then overrides); raises ConfigError."""
    source = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    given = {name: str(source[name]) for name in FIELDS if name in source}
    for name, value in (overrides or {}).items():
        if name not in FIELDS:
            raise ConfigError(f"unknown setting {name}")
        if isinstance(value, str):
            given[name] = value
        else:
            given.pop(name, None)
            values[FIELDS[name][0]] = value
    for name, raw in given.items():
        field, parse = FIELDS[name]
        try:
            values[field] = parse(raw)  # type: ignore[operator]
        except ValueError as exc:
            raise ConfigError(f"{name} is invalid: {exc}") from None
    settings = Settings(**values)
    named = set(given) | set(overrides or {})
    _check_redis(settings, named)
    if settings.production:
        missing = [name for name in REQUIRED_IN_PRODUCTION if name not in named]
        if settings.redis_sentinels and "REDIS_URL" in missing:
            missing.remove("REDIS_URL")  # Sentinel says where the primary is
        if settings.usage_ip_mode == "hash" and not settings.usage_ip_hash_key:
            missing.append("USAGE_IP_HASH_KEY")
        if not settings.retell_api_key and "RETELL_API_KEY" not in missing:
            missing.append("RETELL_API_KEY")
        # Every site without its own `verify` would refuse calls: say so at start-up.
        needs = {
            "pow": ("POW_HMAC_KEY",),
            "turnstile": ("TURNSTILE_SITE_KEY", "TURNSTILE_SECRET_KEY"),
            "hcaptcha": ("HCAPTCHA_SITE_KEY", "HCAPTCHA_SECRET_KEY"),
            "recaptcha": ("RECAPTCHA_SITE_KEY", "RECAPTCHA_SECRET_KEY"),
        }.get(settings.verify_default, ())
        missing += [name for name in needs if not getattr(settings, FIELDS[name][0])]
        if missing:
            raise ConfigError(f"APP_ENV=production needs {', '.join(missing)} to be set")
    return settings
