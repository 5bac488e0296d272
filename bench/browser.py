"""The browser sections' stack, and click to live (section `click`).

Started here, on loopback, stopped here (by the Bench's own process groups):
    redis, the bench fake Retell (create answered after CREATE_DELAY_MS), gunicorn and
    nginx as deployed (one nginx per widget build compared: each BENCH_CLICK_REVS revision,
    built from `git archive`, the first one with each of issue 18's cuts (bench/cuts/), and
    the working tree's static/dist), the aiortc
    fake gateway (devtools/fakes/gateway.py, 400 Hz tone), and bench/delay_proxy.py with
    one route per origin: `cdn-<i>` (widget files), `api-<i>` (token gateway), `sig`
    (signalling), each adding its round-trip time. Widget files and token gateway are two
    origins, as cdn.example.com and calls.example.com in docs/widget.md, so the token
    request opens its own connection, as it does when the visitor clicks after nginx's
    keepalive_timeout or when the files come from a CDN.
    The host page is devtools/demo/index.html, served by nginx's demo server with no delay.

Each call is a fresh browser context (cold cache, no open connections, no preflight
cache: a first visit), Debian's Chromium with the fake microphone. Two scenarios: "click"
(the pointer arrives and clicks at once, as a tap does) and "hover" (it rests on the
launcher HOVER_MS first). Calls alternate between builds so that a noisy neighbour hits
them alike. bench/click_timing.py computes the phases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.click_timing import COLLECT, INSTRUMENT, call_result, summarize
from bench.config import (
    AGENT,
    BENCH,
    BENCH_LIMIT_BURST,
    BENCH_LIMIT_RATE,
    CHROMIUM,
    CLICK_CALLS,
    CLICK_CUTS,
    CLICK_DISTS,
    CLICK_REVS,
    CREATE_DELAY_MS,
    HOVER_MS,
    PAGE_AGENT,
    PREFIX,
    ROOT,
    RTT_FILES_MS,
    RTT_GATEWAY_MS,
    RTT_SIGNALLING_MS,
)
from bench.harness import Bench
from bench.procs import log, machine_busy_ticks
from devtools.chromium import CHROMIUM_ARGS
from devtools.ports import free_port, wait_for_http, wait_for_port
from devtools.run_local import render_demo

STATE = "document.querySelector('retell-widget')?.dataset.state"
SCENARIOS = ("click", "hover")


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def build_rev(rev: str, patches: tuple[str, ...] = ()) -> Path:
    """static/ as it was at `rev` (plus bench/cuts/ patches), built with the repo's
    node_modules; returns its dist/. Kept under static/node_modules (git-ignored): the
    build of a revision and patches never changes."""
    short = git("rev-parse", "--short", rev)
    tag = "".join(f"+{name.split('-')[0]}" for name in patches)
    base = ROOT / "static" / "node_modules" / f".bench-build-{short}{tag}"
    dist = base / "static" / "dist"
    if (dist / "manifest.json").exists():
        return dist
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "static"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True, timeout=60)
    # git apply as a plain patch tool: the ceiling keeps it from finding the repo around.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(base.parent)}
    for name in patches:
        subprocess.run(["git", "apply", str(BENCH / "cuts" / name)], cwd=base, env=env,
                       check=True, timeout=60)  # fmt: skip
    # The build writes beside node_modules and renames: one filesystem, so inside it.
    (base / "static" / "node_modules").symlink_to(ROOT / "static" / "node_modules")
    subprocess.run(
        ["node", "build.mjs"], cwd=base / "static", check=True, capture_output=True, timeout=300
    )
    return dist


def widget_builds(revs: tuple[str, ...], cuts: tuple = (), dists: tuple = ()) -> list[dict]:
    """The revisions first (before), then the first one with each cut's patches, then
    prebuilt dists, then the working tree's static/dist (after)."""
    dirty = git("status", "--porcelain", "--", "static/src", "static/build.mjs")
    head = git("rev-parse", "--short", "HEAD")
    builds = [{"label": f"at {git('rev-parse', '--short', r)}", "rev": r} for r in revs]
    builds += [{"label": label, "rev": revs[0], "patches": patches} for label, patches in cuts]
    for build in builds:
        log(f"building the widget {build['label']}")
        build["dist"] = build_rev(build["rev"], build.get("patches", ()))
    builds += [{"label": label, "rev": "-", "dist": Path(path)} for label, path in dists]
    tree = {"label": f"working tree ({head}{', changed' if dirty else ''})", "rev": "HEAD"}
    tree["dist"] = ROOT / "static" / "dist"
    builds.append(tree)
    for build in builds:
        files = json.loads((build["dist"] / "manifest.json").read_text())["files"]
        build["loader_gzip"] = files["v1/retell-widget.js"]["gzip"]
        build["engine_gzip"] = files["v1/engine-gateway.js"]["gzip"]
    return builds


class BrowserStack:
    """The stack both browser sections use; `stop()` ends everything it started."""

    def __init__(self, builds: list[dict]):
        self.workdir = Path(tempfile.mkdtemp(prefix="widget-bench-browser-"))
        self.bench = Bench(self.workdir)
        self.builds = builds
        self.calls = 0

    def start(self) -> None:
        b = self.bench
        b.start_redis()
        b.start_fake()
        b.set_delay(CREATE_DELAY_MS)
        gw_port = free_port()
        gateway = b.start(
            "fake-gateway",
            [sys.executable, "-m", "devtools.fakes.gateway", "--port", gw_port, "--audio", "tone"],
        )
        wait_for_port(gw_port, 30, process=gateway.popen)
        self.sig_port = free_port()
        base = f"http://127.0.0.1:{self.sig_port}/webrtc-proxy"
        b.start_gateway("browser", [], {"RETELL_GATEWAY_BASE": base, "ALLOW_INSECURE_ORIGINS": "1"})
        self.demo_port = free_port()
        self.demo_root = self.workdir / "demo"
        self.demo_root.mkdir()
        self.page_origin = f"http://localhost:{self.demo_port}"
        b.redis_client.sadd(f"{PREFIX}origins", self.page_origin)
        b.redis_client.sadd(f"{PREFIX}agents:{self.page_origin}", PAGE_AGENT, AGENT)
        routes = [f"sig:{self.sig_port}:{gw_port}:{RTT_SIGNALLING_MS}"]
        for i, build in enumerate(self.builds):
            site = {"dist_root": str(build["dist"])}
            if i == 0:
                site.update(demo_port=self.demo_port, demo_root=str(self.demo_root))
            build["nginx"] = b.start_nginx(
                f"nginx-{i}", BENCH_LIMIT_RATE, BENCH_LIMIT_BURST, **site
            )
            nginx_port = build["nginx"].rsplit(":", 1)[1]
            build["cdn_port"], build["api_port"] = free_port(), free_port()
            routes += [
                f"cdn-{i}:{build['cdn_port']}:{nginx_port}:{RTT_FILES_MS}",
                f"api-{i}:{build['api_port']}:{nginx_port}:{RTT_GATEWAY_MS}",
            ]
        self.proxy = b.start(
            "delay-proxy",
            [
                sys.executable,
                "-m",
                "bench.delay_proxy",
                *(x for r in routes for x in ("--route", r)),
            ],
        )
        for route in routes:
            wait_for_port(int(route.split(":")[1]), 30, process=self.proxy.popen)
        for i, build in enumerate(self.builds):
            build["page"] = self.page(
                f"page-{i}.html",
                f"http://127.0.0.1:{build['cdn_port']}/v1",
                f"http://127.0.0.1:{build['api_port']}/api/create-web-call",
            )
        wait_for_http(self.builds[0]["page"], 30)

    def page(self, name: str, widget_base: str, api_url: str, html=None) -> str:
        """The demo page for these origins (or `html(page)` of it), served as `name`."""
        scratch = Path(tempfile.mkdtemp(dir=self.workdir))
        text = (render_demo(scratch, widget_base=widget_base, api_url=api_url,
                            agent_id=PAGE_AGENT) / "index.html").read_text()  # fmt: skip
        (self.demo_root / name).write_text(html(text) if html else text)
        return f"{self.page_origin}/{name}"

    def proxy_events(self, offset: int) -> tuple[list[dict], int]:
        """The proxy's log lines written since offset, and the new offset."""
        text = self.proxy.log_path.read_text(errors="replace")
        end = text.rfind("\n") + 1
        lines = text[offset:end].splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")], end

    def stop(self) -> None:
        try:
            self.bench.stop_all()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def launch(playwright, workdir: Path):
    """One normal (persistent) profile: Playwright's new_context() is an off-the-record one,
    where Chromium ignores <link rel=preconnect>. Calls are made first visits by
    closing connections and clearing caches between them (chrome.benchmarking)."""
    context = playwright.chromium.launch_persistent_context(
        str(workdir / "profile"),
        executable_path=CHROMIUM,
        args=[*CHROMIUM_ARGS, "--enable-net-benchmarking"],
        viewport={"width": 900, "height": 640},
    )
    context.add_init_script(INSTRUMENT)
    return context


FORGET = """async () => {
  const b = chrome.benchmarking;
  for (const k of ['closeConnections', 'clearCache', 'clearHostResolverCache',
    'clearPredictorCache']) await b[k]();
}"""


def one_call(stack: BrowserStack, context, index: int, scenario: str) -> dict:
    build = stack.builds[index]
    # The token URL is new for every call: the preflight cache outlives closeConnections.
    stack.calls += 1
    api = f"http://127.0.0.1:{build['api_port']}/api/create-web-call?call={stack.calls}"
    url = stack.page(f"call-{stack.calls}.html", f"http://127.0.0.1:{build['cdn_port']}/v1", api)
    page = context.new_page()
    try:
        page.goto("about:blank")
        page.evaluate(FORGET)
        page.goto(url)
        page.wait_for_function(f"{STATE} === 'idle'")
        launcher = page.locator("retell-widget .launch")
        launcher.wait_for(state="visible")
        page.wait_for_load_state("networkidle")  # nothing of the page's own still loading
        _, offset = stack.proxy_events(0)
        if scenario == "hover":
            launcher.hover()
            page.wait_for_timeout(HOVER_MS)
        launcher.click()
        page.wait_for_function(f"['live', 'error'].includes({STATE})", timeout=30000)
        if page.evaluate(STATE) == "live":
            page.wait_for_function("'audio' in window.__bench.marks", timeout=5000)
        data = page.evaluate(COLLECT)
        if page.evaluate(STATE) == "live":
            page.locator("retell-widget .hang").click()
            page.wait_for_function(f"{STATE} === 'ended'", timeout=5000)
            page.wait_for_timeout(100)  # the DELETE leaves before the page closes
    finally:
        page.close()
    events, _ = stack.proxy_events(offset)
    routes = {"api": (f"api-{index}", RTT_GATEWAY_MS), "sig": ("sig", RTT_SIGNALLING_MS)}
    return call_result(data, events, routes, CREATE_DELAY_MS)


def run_click(stack: BrowserStack, playwright) -> dict:
    browser = launch(playwright, stack.workdir)
    runs = {(i, s): [] for i in range(len(stack.builds)) for s in SCENARIOS}
    busy0, total0 = machine_busy_ticks()
    load0 = os.getloadavg()
    started = time.monotonic()
    try:
        # Unrecorded: the first call of each build warms gunicorn, nginx and aiortc.
        for i in range(len(stack.builds)):
            one_call(stack, browser, i, "click")
        for n in range(CLICK_CALLS):
            for scenario in SCENARIOS:
                # Alternate the order too, so neither build always goes first.
                order = list(range(len(stack.builds)))
                for i in order[n % 2 :] + order[: n % 2]:
                    call = one_call(stack, browser, i, scenario)
                    runs[(i, scenario)].append(call)
                    log(
                        f"click {stack.builds[i]['label']:<30} {scenario:<5} #{n + 1}: "
                        + (
                            call.get("failed")
                            or f"live {call['click_to_live_ms']} ms, "
                            f"audio +{call['first_audio_ms']} ms, minimum "
                            f"{call['injected_minimum_ms']} ms"
                        )  # fmt: skip
                    )
        version = browser.browser.version if browser.browser else "?"
    finally:
        browser.close()
    busy1, total1 = machine_busy_ticks()
    return {
        "settings": {
            "calls": CLICK_CALLS,
            "rtt_ms": {
                "files": RTT_FILES_MS,
                "gateway": RTT_GATEWAY_MS,
                "signalling": RTT_SIGNALLING_MS,
            },  # fmt: skip
            "handshake_round_trips": 1,
            "create_delay_ms": CREATE_DELAY_MS,
            "hover_ms": HOVER_MS,
            "chromium": version,
        },
        "machine": {
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "busy_cores": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2),
            "seconds": round(time.monotonic() - started, 1),
        },
        "builds": [
            {
                k: str(v)
                for k, v in b.items()
                if k in ("label", "rev", "patches", "loader_gzip", "engine_gzip")
            }  # fmt: skip
            for b in stack.builds
        ],
        "runs": [
            {
                "build": stack.builds[i]["label"],
                "scenario": scenario,
                "summary": summarize(calls),
                "calls": calls,
            }
            for (i, scenario), calls in runs.items()
        ],
    }


def run_browser_sections(sections: tuple[str, ...]) -> dict:
    """The `click` and `pagecost` sections, on their own stack; returns report entries."""
    from playwright.sync_api import sync_playwright

    from bench.pagecost import run_pagecost

    out: dict = {}
    click = "click" in sections
    builds = widget_builds(*((CLICK_REVS, CLICK_CUTS, CLICK_DISTS) if click else ((),)))
    stack = BrowserStack(builds)
    try:
        stack.start()
        with sync_playwright() as playwright:
            if "click" in sections:
                out["click_to_live"] = run_click(stack, playwright)
            if "pagecost" in sections:
                out["page_cost"] = run_pagecost(stack)
    finally:
        stack.stop()
    return out
