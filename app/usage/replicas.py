"""REDIS_WAIT_REPLICAS: a created call's (or chat's) record is confirmed on that many
replicas before its token is returned, with WAIT pipelined after the record's script, so the
record is still one round trip.

Replication is asynchronous: without WAIT, a write the primary acknowledged can be lost
when a replica takes over. WAIT narrows that window, it does not close it (a replica that
acknowledged may still lose the write in a second failure). A shortfall (fewer replicas in
REDIS_WAIT_TIMEOUT_MS) is logged and counted, and the call or chat still stands: Retell has
created it, and refusing it now would bill a call nobody can join.
"""

from __future__ import annotations

import itertools
import logging

import redis
from redis.commands.core import Script

log = logging.getLogger(__name__)


class Shortfalls:
    """Records WAIT saw on fewer replicas than asked, in this process (health/ready)."""

    def __init__(self):
        self._counter = itertools.count(1)
        self.count = 0

    def add(self) -> None:
        self.count = next(self._counter)  # next() on itertools.count is atomic under the GIL


shortfalls = Shortfalls()


class ReplicaWait:
    def __init__(self, client, settings):
        self.client = client
        self.replicas = settings.redis_wait_replicas
        self.timeout_ms = settings.redis_wait_timeout_ms
        self.cluster = settings.redis_cluster

    def run(self, script: Script, keys: list[str], args: list, confirm: bool = True):
        """The script's reply; with `confirm` (and REDIS_WAIT_REPLICAS set), WAIT follows in
        the same round trip. Raises redis.RedisError like the script itself."""
        if not (confirm and self.replicas):
            return script(keys=keys, args=args)
        reply, acked = self._pipelined(script, keys, args)
        if isinstance(reply, redis.exceptions.NoScriptError):  # a new primary: no scripts yet
            script.sha = self.client.script_load(script.script)
            reply, acked = self._pipelined(script, keys, args)
        if isinstance(reply, Exception):
            raise reply
        if not isinstance(acked, int) or acked < self.replicas:
            shortfalls.add()
            log.warning(
                "record confirmed on %s of %d replicas within %d ms: a failover may lose it",
                acked if isinstance(acked, int) else f"? ({acked})",
                self.replicas,
                self.timeout_ms,
            )
        return reply

    def _pipelined(self, script: Script, keys: list[str], args: list) -> list:
        # A cluster pipeline sends a keyless WAIT to a random node: aim both at the slot's.
        target = {"target_nodes": self.client.get_node_from_key(keys[0])} if self.cluster else {}
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **target)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms, **target)
        return pipe.execute(raise_on_error=False)
