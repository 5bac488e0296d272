"""The HTTP API: one blueprint per concern, all under /api, CORS declared per route."""

from __future__ import annotations

from app.http import calls, chat, cors, feedback, health, transcript, version, webhooks


def init_app(app) -> None:
    for module in (calls, chat, feedback, health, version, webhooks, transcript):
        app.register_blueprint(module.bp)
    cors.init_app(app)
