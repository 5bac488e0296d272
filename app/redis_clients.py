"""The Redis client: one node (REDIS_URL), Sentinel (REDIS_SENTINELS) or Cluster
(REDIS_CLUSTER=1, REDIS_URL naming any node). Each has short timeouts and no client
retries, so Redis trouble fails closed fast (503 unavailable) and the next request tries
again; each raises only redis.RedisError subclasses.

After a failover the client finds the new primary by itself: Sentinel's pool asks the
sentinels again for each new connection (and drops one that meets a demoted primary), the
cluster client re-reads the slot map after any connection error.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from urllib.parse import urlsplit

import redis
from redis._parsers import Encoder
from redis.backoff import NoBackoff
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from config import Settings

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 256  # per process (per node in a cluster)


def no_retries() -> Retry:
    return Retry(NoBackoff(), 0)


def make_redis_client(
    settings: Settings,
    *,
    socket_timeout: float | None = None,
    max_connections: int = MAX_CONNECTIONS,
    client_name: str = "retell-widget-gateway",
):
    """socket_timeout: for reads only (a blocking XREAD outlasts REDIS_SOCKET_TIMEOUT);
    connecting, and waiting for a free connection, always take REDIS_SOCKET_TIMEOUT."""
    timeout = settings.redis_socket_timeout
    options = {
        "socket_timeout": socket_timeout or timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": True,
        "client_name": client_name,
        **_credentials(settings),
    }
    if settings.redis_sentinels:
        return _sentinel_client(settings, options, max_connections)
    if settings.redis_cluster:
        return LazyCluster(
            lambda: GatewayCluster.from_url(
                settings.redis_url,
                retry=no_retries(),
                connection_pool_class=redis.BlockingConnectionPool,
                max_connections=max_connections,
                timeout=timeout,
                **options,
            )
        )
    # Blocking pool: under a burst a request waits (up to the timeout) for a connection
    # instead of failing with "too many connections".
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=timeout,
        retry=no_retries(),
        health_check_interval=30,
        **options,
    )
    return redis.Redis(connection_pool=pool)


def _credentials(settings: Settings) -> dict:
    """The data nodes' ACL user and password (a REDIS_URL's own win), and the TLS CA."""
    given = {}
    if settings.redis_username:
        given["username"] = settings.redis_username
    if settings.redis_password:
        given["password"] = settings.redis_password.reveal()
    tls = settings.redis_tls or urlsplit(settings.redis_url).scheme == "rediss"
    if settings.redis_tls_ca_file and tls:
        given["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    return given


# -- Sentinel ---------------------------------------------------------------------------
class SentinelBlockingPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (each new connection asks where the primary is; a READONLY reply
    drops the connection), waiting for a free connection like the single-node pool."""


def _sentinel_client(settings: Settings, options: dict, max_connections: int) -> redis.Redis:
    tls = {"ssl": True} if settings.redis_tls else {}
    asking = {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        "retry": no_retries(),  # redis.Redis would otherwise retry each sentinel 3 times
        "client_name": options["client_name"],
        **tls,
    }
    if "ssl_ca_certs" in options:  # the same CA for the sentinels as for the nodes
        asking["ssl_ca_certs"] = options["ssl_ca_certs"]
    if settings.redis_sentinel_username:
        asking["username"] = settings.redis_sentinel_username
    if settings.redis_sentinel_password:
        asking["password"] = settings.redis_sentinel_password.reveal()
    sentinel = Sentinel(list(settings.redis_sentinels), sentinel_kwargs=asking)
    return sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=SentinelBlockingPool,
        max_connections=max_connections,
        timeout=settings.redis_socket_timeout,
        retry=no_retries(),
        health_check_interval=30,
        **options,
        **tls,
    )


def raise_if_readonly(client, problems: str) -> None:
    """A script's pcall'd write met a replica (a demoted primary): the request fails closed,
    and idle connections are dropped so the next ones ask Sentinel where the primary is."""
    if "READONLY" not in problems:
        return
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect(inuse_connections=False)
    raise redis.ReadOnlyError(problems)


# -- Cluster ----------------------------------------------------------------------------
class ClusterUnavailable(redis.ConnectionError):
    """No cluster node answered well enough to route a command."""


@contextlib.contextmanager
def _routed():
    # redis-py says "no node to route to" with RedisClusterException, not a RedisError.
    try:
        yield
    except RedisClusterException as exc:
        log.warning("redis cluster: %s", exc)
        raise ClusterUnavailable(str(exc)) from exc


class GatewayCluster(RedisCluster):
    def execute_command(self, *args, **kwargs):
        with _routed():
            return super().execute_command(*args, **kwargs)

    def pipeline(self, transaction=None, shard_hint=None):
        pipe = super().pipeline(transaction, shard_hint)
        pipe.__class__ = GatewayClusterPipeline  # adds no state, only the error mapping
        return pipe


class GatewayClusterPipeline(ClusterPipeline):
    def execute(self, raise_on_error: bool = True):
        with _routed():
            return super().execute(raise_on_error)


class LazyCluster:
    """The cluster client, built on first use: RedisCluster reads the slot map as it is
    made, and the gateway must start (and answer 503) while the cluster is down."""

    def __init__(self, build):
        self._build = build
        self._client: GatewayCluster | None = None
        self._lock = threading.Lock()

    @property
    def cluster(self) -> GatewayCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    with _routed():
                        self._client = self._build()
        return self._client

    def get_encoder(self) -> Encoder:
        return Encoder("utf-8", "strict", True)  # the same as the client's (decode_responses)

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # needs no server: it only hashes the text

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __getattr__(self, name: str):
        return getattr(self.cluster, name)
