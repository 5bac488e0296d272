"""`make bench`: start everything on loopback, run bounded load with wrk, stop everything,
and write bench/results/<date>.json and .md from the measurements.

Systems under test (all started here, all on 127.0.0.1, all stopped at the end):
    fake Retell   bench/fake_retell.py (asyncio), D set between cells; the stdlib
                  devtools/fakes/retell.py is measured directly too, to show which one can
                  be trusted not to be the bottleneck
    gateway       nginx (deploy/nginx, rendered for loopback) -> gunicorn
                  (deploy/gunicorn.conf.py) over a unix socket -> app, real redis-server,
                  APP_ENV=production, allowlist seeded, limits set high, usage stream on
    baseline      bench/baseline: the seed's Express server (npm ci), node, no proxy
    browser       `click` and `pagecost` (bench/browser.py, bench/pagecost.py): their own
                  stack with delay proxies, the aiortc fake gateway, Chromium, Lighthouse

The pieces: bench/config.py (settings, BENCH_* environment), bench/procs.py (processes,
/proc CPU), bench/harness.py (the systems under test and the measured cell),
bench/trips.py (Redis round trips), bench/profiling.py (py-spy), bench/report.py (targets
and Markdown; `python -m bench.report <json>` rebuilds the Markdown from a results JSON).
This module is the order of the sections. Environment (see bench/config.py):
    BENCH_DURATION  seconds per measured cell (default 6)
    BENCH_RETRIES   re-measurements allowed for cells disturbed by other load (default 12)
    BENCH_WARMUP    seconds of unrecorded load before each cell (default 2)
    BENCH_QUICK=1   2 s cells, 1 s warm-up, 3 calls, 1 Lighthouse run: a smoke run
    BENCH_SECTIONS  comma list of create,fake,refusal,trips,profile,workers,click,pagecost
                    (default all); BENCH_CLICK_* and BENCH_LIGHTHOUSE_RUNS: bench/config.py
A quick or partial run writes bench/results/<date>.{json,md}.tmp (git-ignored) instead.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.browser import run_browser_sections
from bench.config import (
    ALL_SECTIONS,
    API_KEY,
    BASELINE,
    BENCH_LIMIT_BURST,
    BENCH_LIMIT_RATE,
    BROWSER_SECTIONS,
    CHROMIUM,
    CONNECTIONS,
    DELAYS_MS,
    DURATION,
    LIMITED_ORIGIN,
    LOAD_SECTIONS,
    MODEL_CONNECTIONS,
    ORIGIN,
    POW_ORIGIN,
    PROD_LIMIT_BURST,
    PROD_LIMIT_RATE,
    QUICK,
    REFUSED_ORIGIN,
    RESULTS,
    ROOT,
    SECTIONS,
    SPEND_ORIGIN,
    SPEND_SYSTEM,
    VENV_BIN,
    WARMUP,
    WORKER_MODELS,
    WRK_THREADS,
)
from bench.harness import Bench
from bench.procs import log, npm_ci, pool_full_warnings, restarts, rss_kib
from bench.profiling import run_profile
from bench.report import evaluate_targets, markdown
from bench.trips import round_trips
from deploy.nginx.render import NGINX_BINARY
from devtools.ports import free_port, wait_for_http, wait_for_port


def measure_stdlib_fake(bench: Bench) -> None:
    """The tests' ThreadingHTTPServer fake, measured directly at the hardest cells."""
    for delay_ms in DELAYS_MS[1:]:
        port = free_port()
        proc = bench.start(
            f"stdlib-fake-{delay_ms}",
            [sys.executable, "-m", "devtools.fakes.retell", "--port", port, "--api-key", API_KEY,
             "--delay", delay_ms / 1000],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_for_port(port, 20, process=proc.popen)
        for conns in (64, 256):
            bench.cell(
                "fake",
                "stdlib fake (devtools/fakes/retell.py)",
                f"{url}/v3/create-web-call",
                conns,
                delay_ms,
                201,
                auth=f"Bearer {API_KEY}",
                groups={"fake": proc},
            )
        bench.stop(proc)


def worker_pids_rss(bench: Bench) -> list[dict]:
    return [
        {"pid": pid, "rss_mib": round(rss_kib(pid) / 1024, 1)} for pid in bench.gunicorn.children()
    ]


def run_load(bench: Bench, report: dict) -> None:
    """Sections 1-5: the load cells on the gateway, the fakes and the baseline."""
    bench.start_redis()
    bench.start_fake()
    label, args, env_extra = WORKER_MODELS[0]
    bench.start_gateway(label, args, env_extra)
    gateway = bench.start_nginx("nginx", BENCH_LIMIT_RATE, BENCH_LIMIT_BURST)
    nginx = bench.last
    baseline = bench.start_baseline("express", 1_000_000_000)
    node = bench.last
    bench.notes.append(
        f"nginx limit_req flood guard raised to {BENCH_LIMIT_RATE} burst "
        f"{BENCH_LIMIT_BURST} for the load cells (production {PROD_LIMIT_RATE} burst "
        f"{PROD_LIMIT_BURST} per client address; all load comes from 127.0.0.1). "
        "The 'edge flood guard' cell uses the production values."
    )
    gw_groups = {
        "gunicorn": bench.gunicorn,
        "nginx": nginx,
        "redis": bench.redis,
        "fake": bench.fake,
    }
    bl_groups = {"node": node, "fake": bench.fake}
    fake_groups = {"fake": bench.fake}
    create = "/api/create-web-call"
    fake_auth = f"Bearer {API_KEY}"

    # 1. create-web-call: fake direct, gateway, baseline; D x connections.
    for delay_ms in DELAYS_MS if "create" in SECTIONS else ():
        bench.set_delay(delay_ms)
        for conns in CONNECTIONS:
            bench.cell("create", "fake Retell direct (bench fake)",
                       f"{bench.fake_url}/v3/create-web-call", conns, delay_ms, 201,
                       origin="", auth=fake_auth, groups=fake_groups)  # fmt: skip
            bench.cell("create", "gateway (nginx+gunicorn)", gateway + create,
                       conns, delay_ms, 201, groups=gw_groups)  # fmt: skip
            if conns in MODEL_CONNECTIONS:
                bench.cell("create", SPEND_SYSTEM, gateway + create, conns, delay_ms, 201,
                           origin=SPEND_ORIGIN, groups=gw_groups)  # fmt: skip
            bench.cell("create", "baseline (seed Express)", baseline + create, conns,
                       delay_ms, 200, groups=bl_groups)  # fmt: skip

    # 1b. The stdlib fake, measured directly (is it fit to be the upstream?).
    if "fake" in SECTIONS:
        measure_stdlib_fake(bench)

    # 2. The cost of saying no (D=0; no upstream call expected).
    bench.set_delay(0)
    if "refusal" in SECTIONS:
        for conns in (64, 256):
            bench.cell("refusal", "gateway: refused origin", gateway + create, conns, 0,
                       403, origin=REFUSED_ORIGIN, groups=gw_groups)  # fmt: skip
            bench.cell("refusal", "gateway: rate limited", gateway + create, conns, 0,
                       429, origin=LIMITED_ORIGIN, groups=gw_groups)  # fmt: skip
            bench.cell("refusal", "gateway: unverified on a pow site", gateway + create,
                       conns, 0, 403, origin=POW_ORIGIN, groups=gw_groups)  # fmt: skip
        edge = bench.start_nginx("nginx-prod-limit", PROD_LIMIT_RATE, PROD_LIMIT_BURST)
        edge_groups = {"nginx": bench.last, "gunicorn": bench.gunicorn}
        # The guard lets its rate (5r/s + burst) through to the app: 201 is expected too.
        bench.cell("refusal", "gateway: nginx flood guard (prod)", edge + create, 64, 0,
                   (429, 201), groups=edge_groups)  # fmt: skip
        bench.stop(bench.last)
        limited = bench.start_baseline("express-limited", 1)
        bench.cell("refusal", "baseline: refused origin", baseline + create, 64, 0, 500,
                   origin=REFUSED_ORIGIN, groups=bl_groups)  # fmt: skip
        bench.cell("refusal", "baseline: rate limited", limited + create, 64, 0, 429,
                   groups={"node": bench.last})  # fmt: skip
        bench.stop(bench.last)

    # 3. Redis round trips per request.
    if "trips" in SECTIONS:
        report["redis_round_trips"] = round_trips(bench, gateway, 20 if QUICK else 100)

    # At D=0, where the time goes.
    if "profile" in SECTIONS:
        report["profiles"] = [
            run_profile(bench, gateway, gw_groups, "created", ORIGIN, 201),
            run_profile(bench, gateway, gw_groups, "refused origin", REFUSED_ORIGIN, 403),
        ]

    # 4 + 5. Worker models at D=150 ms, each measured in this section (same minutes,
    # so the comparison holds on a shared box), then resident memory per worker.
    models = []
    for index, (label, args, env_extra) in enumerate(WORKER_MODELS):
        if "workers" not in SECTIONS:
            break
        if index:
            bench.stop(bench.gunicorn, signal.SIGINT)  # quick: the cells are drained
            if env_extra.get("REDIS_WAIT_REPLICAS"):
                bench.start_replica()
            bench.start_gateway(label, args, env_extra)
            wait_for_http(f"{gateway}/api/health/ready", 60)
            gw_groups["gunicorn"] = bench.gunicorn
        bench.set_delay(0)
        bench.cell("workers", f"gateway ({label})", gateway + create, 64, 0, 201,
                   groups=gw_groups, extra={"worker_model": label})  # fmt: skip
        bench.set_delay(150)
        for conns in MODEL_CONNECTIONS:
            bench.cell("workers", f"gateway ({label})", gateway + create, conns, 150, 201,
                       groups=gw_groups, extra={"worker_model": label})  # fmt: skip
        text = bench.gunicorn.log_text()
        models.append(
            {
                "model": label,
                "rss_per_worker": worker_pids_rss(bench),
                "worker_restarts": restarts(text),
                "pool_full_warnings": pool_full_warnings(text),
            }
        )
    report["worker_models"] = models


def main() -> int:
    # A SIGTERM (a closed terminal, a CI timeout) still runs the `finally` that stops
    # everything this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = any(s in LOAD_SECTIONS for s in SECTIONS)
    if load and not shutil.which("wrk"):
        print("wrk is missing: make sysdeps-bench", file=sys.stderr)
        return 2
    browser = any(s in BROWSER_SECTIONS for s in SECTIONS)
    if browser and not os.path.exists(CHROMIUM):
        print(f"{CHROMIUM} is missing: make sysdeps-test (Debian's chromium)", file=sys.stderr)
        return 2
    if load:
        npm_ci(BASELINE)
    started = time.time()
    today = dt.date.today().isoformat()
    workdir = Path(tempfile.mkdtemp(prefix="widget-bench-"))
    bench = Bench(workdir)
    report: dict = {
        "date": today,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "settings": {
            "duration_s": DURATION,
            "warmup_s": WARMUP,
            "wrk_threads": WRK_THREADS,
            "connections": CONNECTIONS,
            "delays_ms": DELAYS_MS,
        },
    }
    log(f"workdir {workdir}; load average {os.getloadavg()}")
    report["versions"] = versions()
    try:
        if load:
            run_load(bench, report)
            bench.stop_all()  # before the browser sections: an idle stack is still noise
        if browser:
            report.update(run_browser_sections(SECTIONS))
        report["loadavg_at_end"] = os.getloadavg()
    finally:
        bench.stop_all()
    report["cells"] = bench.cells
    report["notes"] = bench.notes
    report["elapsed_s"] = round(time.time() - started)
    report["targets"] = evaluate_targets(report)
    RESULTS.mkdir(exist_ok=True)
    suffix = ".tmp" if QUICK or SECTIONS != ALL_SECTIONS else ""
    json_path = RESULTS / f"{today}.json{suffix}"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = RESULTS / f"{today}.md{suffix}"
    md_path.write_text(markdown(report))
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"wrote {json_path.relative_to(ROOT)} and {md_path.relative_to(ROOT)}")
    return 0


def versions() -> dict:
    def out(*cmd) -> str:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    lock = json.loads((BASELINE / "package-lock.json").read_text())["packages"]
    dirty = out("git", "-C", str(ROOT), "status", "--porcelain", "--", "app", "deploy", "config.py")
    return {
        "commit": out("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")
        + (" (app/deploy changed since)" if dirty not in ("", "?") else ""),
        "nginx": out(NGINX_BINARY, "-v"),
        "redis": out("redis-server", "--version"),
        "wrk": out("wrk", "--version"),
        "node": out("node", "--version"),
        "gunicorn": out(str(VENV_BIN / "gunicorn"), "--version"),
        "express": lock["node_modules/express"]["version"],
        "express-rate-limit": lock["node_modules/express-rate-limit"]["version"],
        "cors": lock["node_modules/cors"]["version"],
    }


if __name__ == "__main__":
    sys.exit(main())
