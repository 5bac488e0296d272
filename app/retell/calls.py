"""The call client: v3 or v2 create-web-call, get-call for reconciling.

The widget gets one response shape whatever the API generation, and nothing else from the
upstream body. A create is never retried: Retell has no idempotency key, so a retry after
the request may have arrived could mint a second, orphaned (billed) call.
"""

from __future__ import annotations

import logging

# Shared with the chat client (app/retell/chat.py); AGENT_NOT_FOUND and UpstreamFailure are
# imported from here by the call routes and the CLI.
from app.retell.upstream import (
    AGENT_NOT_FOUND,
    UNUSABLE,
    UPSTREAM_ID,
    RetellHttp,
    UpstreamFailure,
)

log = logging.getLogger(__name__)

CALL_ID = UPSTREAM_ID  # fullmatch


class RetellClient(RetellHttp):
    extension = "retell"

    def create_web_call(
        self, agent_id: str, metadata: dict, dynamic_variables: dict, max_call_ms: int | None
    ) -> tuple[dict, int]:
        """Returns (the widget's response body, upstream latency ms); raises UpstreamFailure.

        max_call_ms, when given, is sent as agent_override.agent.max_call_duration_ms, so
        Retell itself ends the call there (a minute budget's reservation, or the cap).
        """
        body: dict = {"agent_id": agent_id, "metadata": metadata}
        if dynamic_variables:
            body["retell_llm_dynamic_variables"] = dynamic_variables
        if max_call_ms:
            body["agent_override"] = {"agent": {"max_call_duration_ms": max_call_ms}}
        version = self.settings.retell_api_version
        data, latency_ms = self._call("POST", f"/{version}/create-web-call", body)
        try:
            return self._normalise(data), latency_ms
        except (ValueError, TypeError, KeyError):
            log.warning("upstream create-web-call answered with an unusable body")
            raise UpstreamFailure(UNUSABLE, latency_ms) from None

    def get_call(self, call_id: str) -> dict:
        """Retell's call object (GET /v2/get-call/{id}), for reconciling a missed webhook."""
        if not CALL_ID.fullmatch(call_id):
            raise UpstreamFailure(AGENT_NOT_FOUND, 0)
        data, _ = self._call("GET", f"/v2/get-call/{call_id}")
        if not isinstance(data, dict):
            raise UpstreamFailure(UNUSABLE, 0)
        return data

    def _normalise(self, data: dict) -> dict:
        token, call_id = data["access_token"], data["call_id"]
        if not isinstance(token, str) or not token or not CALL_ID.fullmatch(str(call_id)):
            raise ValueError("missing token or call id")
        if self.settings.retell_api_version == "v2":
            return {"access_token": token, "call_id": call_id, "transport": "livekit"}
        result = {
            "access_token": token,
            "call_id": call_id,
            "transport": "gateway",
            "gateway_url": _gateway_url(data.get("url"))
            or f"{self.settings.retell_gateway_base}/{call_id}",
        }
        if isinstance(data.get("expires_at"), int) and not isinstance(data["expires_at"], bool):
            result["expires_at"] = data["expires_at"]
        servers = _ice_servers(data.get("ice_servers"))
        if servers:
            result["ice_servers"] = servers
        return result


def _gateway_url(value) -> str | None:
    if isinstance(value, str) and value.startswith(("https://", "http://")) and len(value) < 500:
        return value.rstrip("/")
    return None


def _ice_servers(value) -> list[dict]:
    """Keeps only well-formed RTCIceServer dicts with string fields."""
    servers = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        urls = item.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            continue
        server = {"urls": urls}
        for key in ("username", "credential"):
            if isinstance(item.get(key), str):
                server[key] = item[key]
        servers.append(server)
    return servers[:8]


__all__ = ["AGENT_NOT_FOUND", "CALL_ID", "RetellClient", "UpstreamFailure"]
