"""The usage stream writer: refusals are written by admission.lua in the decision's round
trip; created calls and upstream failures are written here after the upstream answer."""

from __future__ import annotations

import logging
import threading

import redis

from app import metrics
from app.usage.entry import UsageEntry

log = logging.getLogger(__name__)


class FailureCounter:
    """Counts usage writes that failed in this process (shown by /api/health/ready)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    def add(self) -> None:
        with self._lock:
            self.count += 1
        metrics.usage_write_failed()


write_failures = FailureCounter()


def record(client: redis.Redis, stream: str, maxlen: int, entry: UsageEntry) -> None:
    """Writes one entry; a failure is logged and counted, never raised."""
    try:
        client.xadd(stream, entry.fields(), maxlen=maxlen or None, approximate=True)
    except redis.RedisError as exc:
        write_failures.add()
        log.error("usage entry not written (%s): %s", type(exc).__name__, entry.outcome)
