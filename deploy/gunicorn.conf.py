"""Gunicorn settings for the token gateway: `gunicorn -c deploy/gunicorn.conf.py wsgi:app`.

Every value can be overridden from the environment (GUNICORN_*), so the same file
serves systemd, `make run`, the tests and the benchmarks.

Worker class: gevent, 1000 connections per worker (chosen by measurement, bench/).
  create-web-call spends almost all of its time waiting on Retell (hundreds of ms)
  and little on the CPU, so a sync worker would serve one visitor at a time. Workers
  ~ cores + 1 (the GIL makes the CPU part per process); each holds up to 1000 requests
  waiting on Retell. gunicorn's gevent worker monkey-patches the standard library
  before the app is imported, so urllib3 and redis-py cooperate without code changes.
  GUNICORN_WORKER_CLASS=gthread (with GUNICORN_THREADS) remains a supported fallback.

  MEASURED (make bench, bench/results/2026-11-25.md, two full runs; 2 cores shared by
  the load generator, nginx, Redis and a fake Retell answering after 150 ms; p99 ms):
                                  D=150 c=64             D=150 c=256      D=0 c=64
    gevent  3 x 1000 connections  374-390 req/s (203-225)  788-905 req/s   964-1004 req/s
    gthread 3 x 64 threads        370-396 req/s (209-239)  604-666 req/s   673-750 req/s
    gthread 3 x 16, recycle 2000  188-195 req/s (632-648)  276-298 req/s   726-730 req/s
  At 64 connections the two are within run-to-run noise; at 256, and with no upstream
  delay, gevent serves 20-45% more calls, spending 2.1-2.6 ms CPU per created call
  against 2.7-3.6 ms for 64 threads (which contend for the GIL). On a CPU-bound box
  that decides it.
  Worker recycling every 2000 requests cost 12-31% of worker CPU in re-imports under
  load, so max_requests is high: a slow leak is still bounded, restarts are rare.

Metrics: prometheus_client's multiprocess mode, prepared by the hooks at the end (no
setting needed); GET /metrics adds up every worker's values.

Access log: off by default, because the app writes one JSON line per request
(method, path, status, duration, request id, origin); GUNICORN_ACCESS_LOG=- adds
gunicorn's own JSON line (client address, X-Forwarded-For, bytes, pid). Two lines per
request cost ~6% of worker CPU in the bench profile.

Timeouts, ordered so that the innermost layer always gives up first and answers
with its own JSON error (upstream_timeout) instead of a bare 502/504 from outside:
  UPSTREAM_CONNECT_TIMEOUT + UPSTREAM_READ_TIMEOUT (3 + 10 s, app)
    < timeout (20 s, gunicorn) < proxy_read_timeout (30 s, deploy/nginx).
graceful_timeout is also longer than the upstream budget, so a reload or stop lets
an in-flight create finish rather than cutting a call that Retell already minted.
"""

import json
import multiprocessing
import os
import shutil
import tempfile
import time

from gunicorn.glogging import Logger


def _env_int(name, default):
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name, default):
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


# Loopback only by default; systemd passes a unix socket (see deploy/systemd/).
bind = [b.strip() for b in os.environ.get("GUNICORN_BIND", "127.0.0.1:8000").split(",")]
backlog = 512

worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 1000)
workers = _env_int("GUNICORN_WORKERS", multiprocessing.cpu_count() + 1)
threads = _env_int("GUNICORN_THREADS", 64)  # gthread only
# nginx keeps upstream connections open (keepalive in the upstream block); this must
# exceed nginx's idle reuse so gunicorn is not the side that closes mid-request.
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)

timeout = _env_int("GUNICORN_TIMEOUT", 20)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 25)

_upstream_budget = _env_float("UPSTREAM_CONNECT_TIMEOUT", 3) + _env_float(
    "UPSTREAM_READ_TIMEOUT", 10
)
if not _upstream_budget < timeout <= graceful_timeout:
    raise RuntimeError(
        f"timeouts out of order: upstream {_upstream_budget:g}s must be < gunicorn timeout "
        f"{timeout}s <= graceful_timeout {graceful_timeout}s"
    )

# Recycle workers now and then so a slow leak never becomes an outage; jitter keeps
# them from all restarting at once.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 100_000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 10_000)

# The heartbeat file lives in RAM: a disk-backed tmp can stall it and get healthy
# workers killed. gunicorn creates it with mkstemp and unlinks it at once.
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None

# The unix socket (GUNICORN_BIND=unix:...) is srwxrwx---: nginx connects through the
# service's group, nobody else can, whatever the process umask (systemd's UMask=0077).
umask = 0o007

# No control socket (gunicorn 25.1+): its default path is $HOME/.gunicorn/gunicorn.ctl,
# one per user, so a second instance on the host would take it over (read-only under the
# hardened unit anyway). tests/deploy/test_gunicorn_instances.py runs two side by side.
control_socket_disable = True

# X-Forwarded-Proto is only believed from the local nginx.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

proc_name = os.environ.get("GUNICORN_PROC_NAME", "widget-gateway")
# Either case, like the app's LOG_LEVEL: gunicorn itself wants lower case and would
# silently log at info for a name it does not know.
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "").strip().lower() or "info"
if loglevel not in ("debug", "info", "warning", "error", "critical"):
    raise RuntimeError(
        f"GUNICORN_LOG_LEVEL={loglevel!r}: expected debug, info, warning, error or critical"
    )
errorlog = "-"
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "") or None


class JsonAccessLogger(Logger):
    """One JSON object per request on the access log, safe for any header content."""

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        headers = dict((k.lower(), v) for k, v in getattr(req, "headers", []) or [])
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "log": "access",
            "remote": environ.get("REMOTE_ADDR"),
            "forwarded_for": headers.get("x-forwarded-for"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "request_id": dict((k.lower(), v) for k, v in getattr(resp, "headers", []) or []).get(
                "x-request-id"
            )
            or headers.get("x-request-id"),
            "origin": headers.get("origin"),
            "user_agent": (headers.get("user-agent") or "")[:200] or None,
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(record, separators=(",", ":")))
        except Exception:
            self.exception("access log failed")


logger_class = JsonAccessLogger

# Prometheus (app/metrics.py): every worker writes its values to files in one directory,
# which /metrics adds up. Prepared once per master start (a HUP reload keeps it):
# PROMETHEUS_MULTIPROC_DIR if set (emptied first), else a new one in RAM, removed at exit.
# The environment is set before any worker imports prometheus_client, which reads it then.
_METRICS_DIR_PREFIX = "widget-gateway-metrics-"


def on_starting(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):  # an earlier run's values: counters start at zero
                os.unlink(os.path.join(path, name))
    else:
        prefix = f"{_METRICS_DIR_PREFIX}{os.getpid()}-"  # whose it is, if one is left
        path = tempfile.mkdtemp(prefix=prefix, dir=worker_tmp_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def child_exit(server, worker):
    """A dead worker's live gauges go (its counters stay: they are totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if os.path.basename(path).startswith(_METRICS_DIR_PREFIX):  # ours, not the operator's
        shutil.rmtree(path, ignore_errors=True)
