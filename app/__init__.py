"""The token gateway: create_app() wires settings, extensions, the API and the CLI."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import cli, http, metrics
from app.errors import register_error_handlers
from app.extensions import chat_client, redis_store, retell_client
from app.logs import configure_logging, init_request_logging
from app.policy.admission import Admission
from app.policy.allowlist import log_allowlist_problems
from app.policy.tokens import TokenSigner
from app.policy.verify import Verifier
from app.usage import spool
from app.usage.calls import CallLedger
from app.usage.chats import ChatLedger
from app.usage.feedback import FeedbackLedger
from config import Settings, load_settings

MAX_BODY_BYTES = 8 * 1024
log = logging.getLogger(__name__)


def token_key(settings: Settings) -> bytes:
    """TOKEN_SIGNING_KEY; else one derived from the Retell key, which every host shares."""
    if settings.token_signing_key:
        return settings.token_signing_key.reveal().encode()
    if settings.retell_api_key:
        seed = settings.retell_api_key.reveal().encode()
        return hmac.new(seed, b"retell-widget token signing key", hashlib.sha256).digest()
    log.warning("TOKEN_SIGNING_KEY is not set: signing tokens with a per-run random key")
    return secrets.token_bytes(32)


def create_app(config: Mapping[str, object] | Settings | None = None) -> Flask:
    """config: a Settings, or env-style overrides such as {"REDIS_URL": ...} for tests."""
    settings = config if isinstance(config, Settings) else load_settings(overrides=config)
    app = Flask(__name__)
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    configure_logging(settings.log_level, settings.secrets)
    if settings.usage_ip_mode == "hash" and not settings.usage_ip_hash_key:
        log.warning("USAGE_IP_HASH_KEY is not set: hashing visitor IPs with a per-run random key")
    hash_key = settings.usage_ip_hash_key.reveal() or secrets.token_hex(32)
    app.config["USAGE_IP_HASH_KEY"] = hash_key.encode()

    if settings.trusted_proxy_count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_count)

    redis_store.init_app(app)
    retell_client.init_app(app)
    chat_client.init_app(app)
    pow_key = settings.pow_hmac_key.reveal().encode()
    if not pow_key and not settings.production:
        log.warning("POW_HMAC_KEY is not set: signing proof-of-work challenges with a random key")
        pow_key = secrets.token_bytes(32)
    app.extensions["tokens"] = TokenSigner(token_key(settings))
    verifier = app.extensions["verifier"] = Verifier(settings, pow_key)
    app.extensions["admission"] = Admission(redis_store.client, settings, verifier.readiness())
    app.extensions["ledger"] = CallLedger(redis_store.client, settings)
    app.extensions["chats"] = ChatLedger(redis_store.client, settings)
    app.extensions["feedback"] = FeedbackLedger(redis_store.client, settings)
    spool.init_app(app)  # records Redis did not take, replayed once it answers

    http.init_app(app)
    metrics.init_app(app)
    register_error_handlers(app)
    init_request_logging(app)
    cli.init_app(app)
    verify = (settings.verify_default, verifier.readiness())
    if not verify[1].get(settings.verify_default):
        log.warning("VERIFY_DEFAULT=%s is not configured: such sites refuse calls", verify[0])
    log_allowlist_problems(redis_store.client, redis_store.key, verify)
    return app
