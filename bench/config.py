"""What `make bench` measures and how: paths, environment settings, the origins and the
worker models. Read by the harness, the main loop and the report alike.

Environment:
    BENCH_DURATION  seconds per measured cell (default 6)
    BENCH_RETRIES   re-measurements allowed for cells disturbed by other load (default 12)
    BENCH_RETRY_CORES  other tenants' cores above which a cell is re-measured (default 0.5)
    BENCH_WARMUP    seconds of unrecorded load before each cell (default 2)
    BENCH_QUICK=1   2 s cells, 1 s warm-up: a smoke run of the whole harness
    BENCH_SECTIONS  comma list of create,fake,refusal,trips,profile,workers,click,pagecost
                    (default all)
    BENCH_CLICK_CALLS  calls per widget build and scenario in `click` (default 20, quick 3)
    BENCH_CLICK_REVS   git revisions whose widget `click` measures beside the working tree's
                       (comma list; default the one before issue 18's cuts; empty: none)
    BENCH_CLICK_CUTS=0 do not measure issue 18's cuts one by one (bench/cuts/*.patch)
    BENCH_CLICK_DISTS  more widget builds to compare, already built: label=path/to/dist,...
    BENCH_HOVER_MS     pointer dwell on the launcher before the click, "hover" scenario (300)
    BENCH_LIGHTHOUSE_RUNS  Lighthouse runs per page in `pagecost` (default 5, quick 1)
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from devtools.chromium import CHROMIUM  # noqa: F401  (re-exported for the bench modules)

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BASELINE = BENCH / "baseline"
VENV_BIN = Path(sys.executable).parent
LUA = BENCH / "post.lua"

QUICK = os.environ.get("BENCH_QUICK") == "1"
LOAD_SECTIONS = ("create", "fake", "refusal", "trips", "profile", "workers")
BROWSER_SECTIONS = ("click", "pagecost")  # bench/browser.py, bench/pagecost.py
ALL_SECTIONS = LOAD_SECTIONS + BROWSER_SECTIONS
SECTIONS = tuple(
    part.strip() for part in os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(",")
)
DURATION = int(os.environ.get("BENCH_DURATION", 2 if QUICK else 6))
WARMUP = int(os.environ.get("BENCH_WARMUP", 1 if QUICK else 2))
CONNECTIONS = (16, 64, 256)
DELAYS_MS = (0, 150)
WRK_THREADS = 2
# Cells measured while other processes on the box used more than this many cores are
# measured once more (at most RETRY_BUDGET times per run) and the quieter one is kept.
RETRY_FOREIGN_CORES = float(os.environ.get("BENCH_RETRY_CORES", 0.5))
RETRY_BUDGET = 0 if QUICK else int(os.environ.get("BENCH_RETRIES", 12))
PYSPY_VERSION = "0.4.3"

API_KEY = "key_bench_" + secrets.token_hex(8)
ORIGIN = "https://client-a.com"
LIMITED_ORIGIN = "https://limited.example"  # allowlisted, per-day cap 0: always 429
# Allowlisted with a minute budget and a concurrency cap too large to refuse anything: the
# admission script reserves minutes and a live slot, the record script writes them back.
SPEND_ORIGIN = "https://budgeted.example"
SPEND_LIMITS = {"minutes_per_day": 10**9, "minutes_per_month": 10**9, "max_concurrent": 10**9}
SPEND_SYSTEM = "gateway, budgets + caps on"
POW_ORIGIN = "https://pow.example"  # asks for proof of work: an unverified flood gets 403
POW_HMAC_KEY = "bench-" + secrets.token_hex(16)
REFUSED_ORIGIN = "https://not-allowed.example"
AGENT = "agent_bench"
BODY = json.dumps({"agent_id": AGENT})
PREFIX = "widget:"
HIGH_IP_LIMIT = "100000000 per minute"
HIGH_ORIGIN_DAY = "1000000000"
# The nginx flood guard (production: 5r/s burst 20 per client address) would answer
# nearly every benchmark request with 429, since all load comes from 127.0.0.1.
BENCH_LIMIT_RATE, BENCH_LIMIT_BURST = "100000r/s", 100000
PROD_LIMIT_RATE, PROD_LIMIT_BURST = "5r/s", 20

# Worker models compared at D=150 ms; the first is deploy/gunicorn.conf.py as committed.
WORKER_MODELS = (
    ("gevent 3x1000 (production default)", [], {}),
    # The same without Prometheus metrics: what the instrumentation costs (a target: <= 5%).
    ("gevent 3x1000, METRICS_ENABLED=0", [], {"METRICS_ENABLED": "0"}),
    ("gthread 3x64", ["-k", "gthread"], {"GUNICORN_THREADS": "64"}),
    # The first default, kept to show what 48 slots and frequent recycling cost.
    (
        "gthread 3x16 max_requests 2000",
        ["-k", "gthread"],
        {
            "GUNICORN_THREADS": "16",
            "GUNICORN_MAX_REQUESTS": "2000",
            "GUNICORN_MAX_REQUESTS_JITTER": "200",
        },
    ),
    # Last, because its replica then stays up: each created call's record confirmed on a
    # replica (WAIT 1) before the answer.
    ("gevent 3x1000, REDIS_WAIT_REPLICAS=1", [], {"REDIS_WAIT_REPLICAS": "1"}),
)
# Requests one gunicorn instance can hold at once, per model (workers x threads/conns).
MODEL_SLOTS = {
    "gateway (nginx+gunicorn)": 3000,
    SPEND_SYSTEM: 3000,
    "gateway (gevent 3x1000 (production default))": 3000,
    "gateway (gevent 3x1000, METRICS_ENABLED=0)": 3000,
    "gateway (gevent 3x1000, REDIS_WAIT_REPLICAS=1)": 3000,
    "gateway (gthread 3x64)": 192,
    "gateway (gthread 3x16 max_requests 2000)": 48,
}
MODEL_CONNECTIONS = (64, 256)

# Click to live (bench/browser.py): latency the delay proxy adds per round trip, on the way
# to the widget files, to the token gateway and to the call's signalling; Retell's create.
RTT_FILES_MS = 40
RTT_GATEWAY_MS = 40
RTT_SIGNALLING_MS = 40
CREATE_DELAY_MS = 150
CLICK_CALLS = int(os.environ.get("BENCH_CLICK_CALLS", 3 if QUICK else 20))
# b82d969: main just before the issue-18 cuts (327652d: preconnect, early peer connection).
CLICK_REVS = tuple(
    r.strip() for r in os.environ.get("BENCH_CLICK_REVS", "b82d969").split(",") if r.strip()
)
# Those cuts one at a time, as patches (bench/cuts/) on the first of CLICK_REVS; the working
# tree has all three. BENCH_CLICK_CUTS=0: not measured.
CLICK_CUTS = (
    ()
    if os.environ.get("BENCH_CLICK_CUTS") == "0" or not CLICK_REVS
    else (
        ("+ preconnect to the gateway", ("1-preconnect-gateway.patch",)),
        ("+ preconnect to the signalling",
         ("1-preconnect-gateway.patch", "2-preconnect-signalling.patch")),
    )
)  # fmt: skip
CLICK_DISTS = tuple(
    tuple(item.split("=", 1)) for item in os.environ.get("BENCH_CLICK_DISTS", "").split(",") if item
)
HOVER_MS = int(os.environ.get("BENCH_HOVER_MS", 300))
PAGE_AGENT = "agent_demo"
LIGHTHOUSE = BENCH / "lighthouse"
LIGHTHOUSE_RUNS = int(os.environ.get("BENCH_LIGHTHOUSE_RUNS", 1 if QUICK else 5))
