"""Text chat with the site's Retell chat agent: start, send, end, read back.

POST /api/chat          the create-web-call steps with kind "chat" (app/http/calls.py):
                        origin, body, one admission round trip (chat grants and limits,
                        verification), Retell's create-chat, one round trip to record it
POST /api/chat/messages one round trip decides (app/usage/chats.lua), then one turn upstream
POST /api/chat/end      one round trip closes the chat (its end entry), then end-chat upstream
GET  /api/chat/history  one round trip checks, then get-chat upstream

After the start, the browser holds a chat token signed by the gateway (app/policy/tokens.py):
it binds the chat to its allowlist entry, agent, origin and expiry, so no session is kept
here. The token travels in the JSON body, or in `Authorization: Bearer` for the history,
never in a URL. An allowlisted origin may read every answer (CORS), as for calls.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

import redis
from flask import Blueprint, current_app, jsonify, request

from app.errors import ApiError, upstream_error
from app.extensions import chat_client
from app.http import cors
from app.http.calls import (
    Caller,
    admit_request,
    json_object,
    limit_headers,
    origin_refused,
    preflight,
    server_metadata,
    start_entry,
    unavailable,
)
from app.policy import admission
from app.policy.admission import AdmissionRequest, Decision
from app.policy.tokens import MAX_TOKEN, TokenExpired, TokenInvalid
from app.retell.upstream import AGENT_NOT_FOUND, UpstreamFailure
from app.usage.entry import UsageEntry
from app.usage.stream import write_failures

bp = Blueprint("chat", __name__, url_prefix="/api")
log = logging.getLogger(__name__)

PURPOSE = "chat"  # the token purpose: a chat token passes as nothing else
MAX_CONTENT = 2000  # characters (code points) of one visitor message
MAX_MESSAGE_BODY, MESSAGE_BODY_SIZE = 32 * 1024, "32 KiB"  # 2,000 characters, even \u-escaped
HAS_TEXT = re.compile(r"\S")
NO_STORE = {"Cache-Control": "no-store"}  # a conversation is nobody's cache entry


def _settings():
    return current_app.config["SETTINGS"]


@dataclasses.dataclass(frozen=True)
class ChatToken:
    """What a chat token binds (claims c, e, a, o and exp)."""

    chat_id: str
    entry: str
    agent_id: str
    origin: str
    expires_at: int  # unix seconds

    def sign(self) -> str:
        claims = {"c": self.chat_id, "e": self.entry, "a": self.agent_id, "o": self.origin}
        return current_app.extensions["tokens"].sign(PURPOSE, claims, self.expires_at)

    @classmethod
    def from_claims(cls, claims: dict) -> ChatToken | None:
        values = [claims.get(name) for name in ("c", "e", "a", "o")]
        if not all(isinstance(v, str) and v for v in values):
            return None
        return cls(*values, expires_at=claims["exp"])


# -- the routes ---------------------------------------------------------------------------


@bp.route("/chat", methods=["POST", "OPTIONS"])
@cors.exact
def start_chat():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller, "POST", "chat", cors.CHAT_PREFLIGHT_HEADERS)
    decision, body, entry = admit_request(caller, "chat")
    headers = {**limit_headers(decision), **NO_STORE}
    return jsonify(open_chat(decision, caller, body, entry, headers)), 201, headers


@bp.route("/chat/messages", methods=["POST", "OPTIONS"])
@cors.exact
def send_message():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller, "POST", "chat", cors.CHAT_PREFLIGHT_HEADERS)
    request.max_content_length = MAX_MESSAGE_BODY
    token, content = _before_ledger(caller, lambda: _message_body(caller))
    reply = _ledger(caller, "message", token)
    match reply.get("outcome"):
        case "admitted":
            pass
        case "message_limit":
            raise ApiError(
                429, "chat_message_limit", "This chat has reached its message limit.",
                limit=reply.get("limit", 0),
            )  # fmt: skip
        case "rate_limited":
            retry_after = max(int(reply.get("retry_after", 1)), 1)
            headers = {
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(reply.get("limit", 0)),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reply.get("reset", 0)),
            }
            raise ApiError(
                429, "rate_limited", "Too many messages; wait a moment.", headers,
                retry_after=retry_after,
            )  # fmt: skip
        case outcome:
            raise _refusal(outcome)
    try:
        messages, _ = chat_client.create_chat_completion(token.chat_id, content)
    except UpstreamFailure as exc:
        raise _chat_upstream_error(exc) from None
    return jsonify({"messages": messages}), 200, NO_STORE


@bp.route("/chat/end", methods=["POST", "OPTIONS"])
@cors.exact
def end_chat():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller, "POST", "chat", cors.CHAT_PREFLIGHT_HEADERS)

    def body():
        fields = json_object(("chat_token",))
        # An expired token may still end its chat: ending twice, or late, is harmless.
        return read_token(caller, _token_field(fields), allow_expired=True)

    token = _before_ledger(caller, body)
    usage = start_entry(caller, "chat").decided(
        "ended", 204, entry=token.entry, agent_id=token.agent_id, chat_id=token.chat_id
    )
    try:
        reply = current_app.extensions["chats"].ended(
            token.chat_id, token.entry, token.agent_id, caller.implicit, usage
        )
    except redis.RedisError as exc:
        raise unavailable(exc) from None
    if reply.get("listed"):
        cors.allow(caller.raw_origin)
    if reply.get("outcome") == "ended":  # the first end only; best effort upstream
        end_upstream(token.chat_id)
    response = current_app.response_class(status=204)
    response.headers.pop("Content-Type", None)
    return response


@bp.route("/chat/history", methods=["GET", "OPTIONS"])
@cors.exact
def chat_history():
    caller = Caller.from_request()
    if request.method == "OPTIONS":
        return preflight(caller, "GET", "chat", cors.CHAT_PREFLIGHT_HEADERS)
    token = _before_ledger(caller, lambda: read_token(caller, _bearer()))
    reply = _ledger(caller, "status", token)
    if reply.get("outcome") != "admitted":
        raise _refusal(reply.get("outcome"))
    try:
        chat = chat_client.get_chat(token.chat_id)
    except UpstreamFailure as exc:
        raise _chat_upstream_error(exc) from None
    body = {
        "chat_id": token.chat_id,
        "ended": bool(reply.get("ended")) or chat["ended"],
        "messages": chat["messages"],
    }
    return jsonify(body), 200, NO_STORE


# -- the steps ----------------------------------------------------------------------------


def open_chat(
    decision: Decision, caller: Caller, body: dict, entry: UsageEntry, headers: dict
) -> dict:
    """Creates the chat upstream (never retried), signs its token and records it: one
    round trip, which also closes a few expired chats."""
    ledger = current_app.extensions["chats"]
    entry = dataclasses.replace(entry, entry=decision.entry, agent_id=decision.agent_id)
    metadata = server_metadata(body, caller)
    try:
        chat_id, opening, latency_ms = chat_client.create_chat(
            decision.agent_id, metadata, body["dynamic_variables"]
        )
    except UpstreamFailure as exc:
        error = upstream_error(exc.kind, exc.retry_after, headers)
        ledger.failed(
            entry.decided(
                "upstream_error", error.status, error=error.code, upstream_ms=exc.latency_ms
            )
        )
        raise error from None
    except Exception:
        ledger.failed(entry.decided("unavailable", 500, error="internal_error"))
        raise
    token = ChatToken(
        chat_id, decision.entry, decision.agent_id, caller.origin,
        int(time.time()) + _settings().chat_token_ttl,
    )  # fmt: skip
    created = entry.decided("created", 201, chat_id=chat_id, upstream_ms=latency_ms)
    try:
        ledger.created(chat_id, token.entry, token.agent_id, token.origin,
                       token.expires_at * 1000, created)  # fmt: skip
    except redis.RedisError as exc:
        # Without its record the chat could take no message: give it up, upstream too, and
        # spool its usage entry (what Retell made is on the stream once Redis is back).
        write_failures.add()
        end_upstream(chat_id)
        ledger.abandoned(created.decided("unavailable", 503, error="unavailable"), exc)
        raise unavailable(exc) from None
    return {
        "chat_id": chat_id,
        "chat_token": token.sign(),
        "expires_at": token.expires_at * 1000,
        "messages": opening,
    }


def read_token(caller: Caller, value, allow_expired: bool = False) -> ChatToken:
    """The chat a token names, for this origin only; raises 403 chat_token_invalid (not
    ours, altered, another origin's) or chat_token_expired (start a new chat)."""
    signer = current_app.extensions["tokens"]
    expired = False
    try:
        claims = signer.verify(PURPOSE, value)
    except TokenExpired:
        claims, expired = signer.verify(PURPOSE, value, now=0), True  # intact, but late
    except TokenInvalid:
        claims = {}
    token = ChatToken.from_claims(claims)
    if token is None or token.origin != caller.origin:
        raise ApiError(403, "chat_token_invalid", "This chat token is not valid here.")
    if expired and not allow_expired:
        raise ApiError(403, "chat_token_expired", "This chat has expired; start a new one.")
    return token


def end_upstream(chat_id: str) -> None:
    """end-chat, best effort: a failure is logged, never answered."""
    try:
        chat_client.end_chat(chat_id)
    except UpstreamFailure as exc:
        log.warning("end-chat upstream failed (%s) for %s", exc.kind, chat_id)


def _message_body(caller: Caller) -> tuple[ChatToken, str]:
    body = json_object(("chat_token", "content"), MESSAGE_BODY_SIZE)
    token_value = _token_field(body)
    content = body.get("content")
    if not (isinstance(content, str) and len(content) <= MAX_CONTENT and HAS_TEXT.search(content)):
        raise ApiError(
            400, "invalid_request",
            f"content must be a string of 1-{MAX_CONTENT} characters, not only spaces",
        )  # fmt: skip
    return read_token(caller, token_value), content


def _token_field(body: dict) -> str:
    value = body.get("chat_token")
    if not (isinstance(value, str) and 0 < len(value) <= MAX_TOKEN):
        raise ApiError(400, "invalid_request", f"chat_token must be 1-{MAX_TOKEN} characters")
    return value


def _bearer() -> str:
    """The history's token; no `Authorization: Bearer` at all is a 401 (RFC 6750)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(
            401, "chat_token_invalid", "Send the chat token as Authorization: Bearer <token>.",
            {"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return value.strip()


def _before_ledger(caller: Caller, step):
    """Runs `step` (reading the body and the token). Its refusal is readable only by an
    allowlisted origin, which costs one round trip, as a create-web-call refusal does."""
    if not caller.origin:
        raise origin_refused("chat")
    try:
        return step()
    except ApiError:
        _allow_if_listed(caller)
        raise


def _allow_if_listed(caller: Caller) -> None:
    gate = current_app.extensions["admission"]
    asked = AdmissionRequest(mode="preflight", origin=caller.origin, implicit=caller.implicit)
    try:
        if gate.decide(asked).outcome == admission.ADMITTED:
            cors.allow(caller.raw_origin)
    except redis.RedisError as exc:  # the refusal stands; only its CORS headers are missing
        log.warning("allowlist not read for a chat refusal: %s", type(exc).__name__)


def _ledger(caller: Caller, op: str, token: ChatToken) -> dict:
    """One round trip: the chat's checks (and, for a message, its count)."""
    ledger = current_app.extensions["chats"]
    try:
        reply = getattr(ledger, op)(token.chat_id, token.entry, token.agent_id, caller.implicit)
    except redis.RedisError as exc:
        raise unavailable(exc) from None
    if reply.get("listed"):
        cors.allow(caller.raw_origin)
    return reply


def _refusal(outcome) -> ApiError:
    """The ledger's refusal; an outcome this code does not know refuses too (fail closed)."""
    if outcome == "origin_denied":
        return origin_refused("chat")
    if outcome == "agent_denied":
        return ApiError(403, "agent_not_allowed", "This agent is not available on this site.")
    if outcome == "chat_ended":
        return ApiError(409, "chat_ended", "This chat has ended; start a new one.")
    log.error("unknown chat ledger outcome %r: refused", outcome)
    return ApiError(500, "internal_error", "Something went wrong on our side.")


def _chat_upstream_error(exc: UpstreamFailure) -> ApiError:
    """As for calls, except that Retell not knowing the chat (404/422) means it has ended."""
    if exc.kind == AGENT_NOT_FOUND:
        return _refusal("chat_ended")
    return upstream_error(exc.kind, exc.retry_after)
