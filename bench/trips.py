"""Redis round trips per request: MONITOR says who sent each command (a client, or the
admission script inside Redis); INFO commandstats deltas over the same requests count
script-internal commands as well."""

from __future__ import annotations

import http.client
import threading
import time

import redis

from bench.config import BODY, LIMITED_ORIGIN, ORIGIN, POW_ORIGIN, REFUSED_ORIGIN, SPEND_ORIGIN
from bench.harness import Bench, redis_client
from bench.procs import log


def commandstats(client: redis.Redis) -> dict[str, int]:
    """Calls per command name ("get", "client|list", ...) since the server started."""
    return {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in client.info("commandstats").items()
    }


class Monitor:
    """Counts what Redis executes, split into client round trips and script-internal calls."""

    def __init__(self, port: int):
        self.clients: dict[str, int] = {}
        self.script: dict[str, int] = {}
        self.monitor = redis_client(port).monitor()
        self.monitor.__enter__()  # MONITOR answered +OK: every later command is seen
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        connection = self.monitor.connection
        while not self.stopped.is_set():
            try:
                if not connection.can_read(timeout=0.2):
                    continue
                line = self.monitor.next_command()
            except (redis.RedisError, OSError):
                return
            if not line or not line["command"]:
                continue
            target = self.script if line["client_type"] == "lua" else self.clients
            name = line["command"].split(" ", 1)[0].lower()
            target[name] = target.get(name, 0) + 1

    def stop(self) -> tuple[dict[str, int], dict[str, int]]:
        time.sleep(0.3)
        self.stopped.set()
        self.thread.join(2)
        self.monitor.__exit__(None, None, None)
        return self.clients, self.script


def round_trips(bench: Bench, gateway_url: str, samples: int) -> dict:
    """Redis commands per request, from MONITOR (who sent it) and INFO commandstats."""
    host, port = gateway_url.removeprefix("http://").split(":")
    out = {}
    for kind, origin, expect in (
        ("created", ORIGIN, 201),
        ("created_budgeted", SPEND_ORIGIN, 201),
        ("refused_origin", REFUSED_ORIGIN, 403),
        ("rate_limited", LIMITED_ORIGIN, 429),
        ("unverified_pow", POW_ORIGIN, 403),
    ):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Content-Type": "application/json", "Origin": origin}
        conn.request("POST", "/api/create-web-call", BODY, headers)  # warm this connection
        conn.getresponse().read()
        creates_before = bench.upstream_creates()
        stats_before = commandstats(bench.redis_client)
        monitor = Monitor(bench.redis_port)
        statuses: dict[int, int] = {}
        for _ in range(samples):
            conn.request("POST", "/api/create-web-call", BODY, headers)
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
        clients, script = monitor.stop()
        stats_after = commandstats(bench.redis_client)
        conn.close()
        upstream = bench.upstream_creates() - creates_before
        delta = {
            name: stats_after.get(name, 0) - stats_before.get(name, 0)
            for name in stats_after
            if name not in ("info", "monitor") and stats_after[name] != stats_before.get(name, 0)
        }
        out[kind] = {
            "samples": samples,
            "statuses": statuses,
            "expected_status": expect,
            "round_trips_per_request": round(sum(clients.values()) / samples, 2),
            "client_commands_per_request": {k: round(v / samples, 2) for k, v in clients.items()},
            "script_commands_per_request": {k: round(v / samples, 2) for k, v in script.items()},
            "commandstats_delta_per_request": {k: round(v / samples, 2) for k, v in delta.items()},
            "upstream_calls_per_request": round(upstream / samples, 3),
        }
        log(f"round trips {kind}: {out[kind]['round_trips_per_request']} {clients}")
    return out
