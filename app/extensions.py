"""Process-wide clients, each initialised by init_app: Redis and the Retell clients."""

from __future__ import annotations

import redis

from app.redis_clients import make_redis_client
from app.retell.calls import RetellClient
from app.retell.chat import ChatClient
from config import Settings


class RedisStore:
    """One Redis client per process (single node, Sentinel or Cluster: app/redis_clients.py);
    short timeouts and no retries so we fail fast."""

    def __init__(self):
        self.client: redis.Redis | None = None
        self.prefix = "widget:"

    def init_app(self, app) -> None:
        settings: Settings = app.config["SETTINGS"]
        self.prefix = settings.redis_key_prefix
        self.client = make_redis_client(settings)
        app.extensions["redis"] = self

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)


redis_store = RedisStore()
retell_client = RetellClient()
chat_client = ChatClient()  # its own pool: a slow chat turn holds none of the calls' connections
