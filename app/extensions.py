"""Process-wide clients, each initialised by init_app: Redis and the Retell clients."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.retell.calls import RetellClient
from app.retell.chat import ChatClient
from config import Settings


class RedisStore:
    """One Redis client per process; short timeouts and no retries so we fail fast."""

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


def make_redis_client(settings: Settings) -> redis.Redis:
    timeout = settings.redis_socket_timeout
    # Blocking pool: under a burst a request waits (up to the timeout) for a connection
    # instead of failing with "too many connections".
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=256,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        health_check_interval=30,
        client_name="retell-widget-gateway",
    )
    return redis.Redis(connection_pool=pool)


redis_store = RedisStore()
retell_client = RetellClient()
chat_client = ChatClient()  # its own pool: a slow chat turn holds none of the calls' connections
