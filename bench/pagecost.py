"""What the widget costs the host page (section `pagecost`): Lighthouse 12.2.3 (pinned in
bench/lighthouse/package.json + lock, `npm ci` like bench/baseline), on Node, driving
Debian's Chromium headless, on the demo page (devtools/demo/index.html) three ways:

    without widget  the demo page with the widget's <link>, <script> and init removed
    seed snippet    the demo page as `make run` serves it: the seed's snippet, a
                    stylesheet <link> in <head> and a plain <script> before </body>
    async snippet   the page without the widget plus the zero-JS snippet
                    (<script async data-...>) in <head>, as docs/widget.md suggests

Lighthouse's defaults: mobile, simulated throttling (150 ms RTT, 1.6 Mbps, 4x CPU). The
widget files come from nginx directly (no delay proxy: Lighthouse simulates the network).
Each page LIGHTHOUSE_RUNS times, interleaved; medians reported. "Main-thread time of the
widget's scripts" is Lighthouse's bootup-time for URLs under the widget's /v1/ (threshold
0), as Lighthouse reports it (observed x the 4x slowdown) and as observed here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import statistics
import subprocess

from bench.browser import CHROMIUM_ARGS, BrowserStack
from bench.config import CHROMIUM, LIGHTHOUSE, LIGHTHOUSE_RUNS, PAGE_AGENT
from bench.procs import log, machine_busy_ticks, npm_ci

WIDGET_TAGS = (
    re.compile(r"[ \t]*<link[^>]*retell-widget\.css[^>]*>\n?"),
    re.compile(r"[ \t]*<script[^>]*retell-widget\.js[^>]*></script>\n?"),
    re.compile(r"[ \t]*<script>\s*new RetellWidget\([\s\S]*?</script>\n?"),
)
MEDIANS = (
    "score", "tbt_ms", "cls", "fcp_ms", "lcp_ms", "si_ms", "bytes", "requests",
    "widget_bytes", "main_thread_ms", "widget_main_thread_ms", "loader_main_thread_ms",
    "widget_js_observed_ms", "loader_js_observed_ms", "observed_fcp_ms", "observed_lcp_ms",
)  # fmt: skip


def without_widget(html: str) -> str:
    for pattern in WIDGET_TAGS:
        html = pattern.sub("", html)
    if "RetellWidget" in html or "retell-widget" in html:
        raise RuntimeError("the demo page embeds the widget in a new way: update WIDGET_TAGS")
    return html


def async_snippet(base: str, api: str):
    tag = (
        f'<script src="{base}/retell-widget.js" async data-proxy-endpoint="{api}" '
        f'data-agent-id="{PAGE_AGENT}"></script>\n'
    )
    return lambda html: without_widget(html).replace("</head>", tag + "</head>", 1)


def summarize(runs: list[dict]) -> dict:
    out = {"runs": len(runs)}
    for key in MEDIANS:
        values = [r[key] for r in runs if r.get(key) is not None]
        out[key] = round(statistics.median(values), 3) if values else None
    multiplier = runs[0]["cpu_multiplier"] if runs else 1
    out["cpu_multiplier"] = multiplier
    for key in ("widget_main_thread_ms", "loader_main_thread_ms"):
        if out[key] is not None:
            out[key.replace("_ms", "_observed_ms")] = round(out[key] / multiplier, 2)
    # CPU work only grows when a neighbour takes the core: the fastest run is the least
    # disturbed estimate on a shared machine.
    own = [r["loader_js_observed_ms"] for r in runs if r.get("loader_js_observed_ms") is not None]
    out["loader_js_observed_min_ms"] = round(min(own), 3) if own else None
    out["widget_requests"] = runs[0]["widget_requests"] if runs else []
    out["errored_audits"] = sorted({a for r in runs for a in r.get("errored_audits", [])})
    out["runtime_errors"] = sorted({r["runtime_error"] for r in runs if r["runtime_error"]})
    return out


def kill_stray_chromes(log_text: str) -> None:
    """chrome-launcher starts Chromium in its own process group; stop any it left."""
    for line in log_text.splitlines():
        if line.startswith('{"chrome_pid"'):
            pid = json.loads(line)["chrome_pid"]
            with contextlib.suppress(OSError):
                if "chrom" in open(f"/proc/{pid}/cmdline").read():  # noqa: SIM115
                    os.killpg(pid, signal.SIGKILL)


def run_pagecost(stack: BrowserStack) -> dict:
    npm_ci(LIGHTHOUSE)
    build = stack.builds[-1]  # the working tree's widget
    base, api = f"{build['nginx']}/v1", f"{build['nginx']}/api/create-web-call"
    pages = {
        "without widget": stack.page("bare.html", base, api, without_widget),
        "seed snippet": stack.page("seed.html", base, api),
        "async snippet": stack.page("async.html", base, api, async_snippet(base, api)),
    }
    out_path = stack.workdir / "lighthouse.json"
    spec = {
        "pages": pages,
        "runs": LIGHTHOUSE_RUNS,
        "widget": f"{base}/",
        "chromePath": CHROMIUM,
        "flags": ["--headless=new", *CHROMIUM_ARGS[:6]],
        "out": str(out_path),
    }
    (stack.workdir / "lighthouse-spec.json").write_text(json.dumps(spec))
    log(f"lighthouse: {len(pages)} pages x {LIGHTHOUSE_RUNS} runs")
    busy0, total0 = machine_busy_ticks()
    load0 = os.getloadavg()
    proc = stack.bench.start(
        "lighthouse", ["node", "run.mjs", stack.workdir / "lighthouse-spec.json"], cwd=LIGHTHOUSE
    )
    try:
        proc.popen.wait(timeout=120 * len(pages) * LIGHTHOUSE_RUNS)
    except subprocess.TimeoutExpired:
        pass
    finally:
        stack.bench.stop(proc, signal.SIGINT)
        kill_stray_chromes(proc.log_path.read_text(errors="replace"))
    if proc.popen.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"lighthouse failed ({proc.popen.returncode}), see {proc.log_path}")
    busy1, total1 = machine_busy_ticks()
    result = json.loads(out_path.read_text())
    by_page = {name: [r for r in result["runs"] if r["page"] == name] for name in pages}
    summary = {name: summarize(runs) for name, runs in by_page.items()}
    bare = summary["without widget"]
    for s in summary.values():
        s["delta"] = {
            k: round(s[k] - bare[k], 3)
            for k in ("score", "tbt_ms", "cls", "fcp_ms", "lcp_ms", "bytes", "main_thread_ms")
            if s[k] is not None and bare[k] is not None
        }
    return {
        "lighthouse": result["lighthouse"],
        "user_agent": result.get("userAgent"),
        "settings": {**result.get("settings", {}), "runs_per_page": LIGHTHOUSE_RUNS},
        "machine": {
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
            "busy_cores": round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2),
        },
        "pages": {
            name: {"url": pages[name], "summary": summary[name], "runs": by_page[name]}
            for name in pages
        },  # fmt: skip
    }
