"""The report of one run: the Targets table (evaluate_targets) and the Markdown tables,
both computed from the results JSON alone, so the Markdown can be rebuilt without running
the load again:

    python -m bench.report bench/results/2026-11-25.json           # Markdown to stdout
    python -m bench.report bench/results/2026-11-25.json --write   # writes 2026-11-25.md

The Targets table is the one recorded in the JSON; --recompute-targets evaluates the
targets again from the JSON's cells with this module's code (after changing a target).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.config import (
    CONNECTIONS,
    MODEL_CONNECTIONS,
    MODEL_SLOTS,
    SPEND_SYSTEM,
    WORKER_MODELS,
    WRK_THREADS,
)
from bench.report_browser import browser_markdown, browser_targets


def _find(cells, section, system_prefix, delay_ms, connections):
    for cell in cells:
        if (
            cell["section"] == section
            and cell["system"].startswith(system_prefix)
            and cell["delay_ms"] == delay_ms
            and cell["connections"] == connections
        ):
            return cell
    return None


def cpu_ms_total(cell: dict) -> float:
    return sum(cell["cpu_ms_per_request"].values()) + cell.get("wrk_cpu_ms_per_request", 0)


def bounds(cell: dict, cpus: int) -> str:
    """Why a cell's throughput is what it is: the CPU bound and the concurrency bound."""
    free = max(cpus - cell.get("foreign_cpu_cores", 0), 0.1)
    cpu_ms = cpu_ms_total(cell)
    cpu_bound = free * 1000 / max(cpu_ms, 0.001)
    text = (
        f"CPU bound {cpu_bound:.0f} req/s ({cpu_ms:.2f} ms CPU per request, all processes "
        f"incl. wrk, on the {free:.2f} cores other tenants left free)"
    )
    if cell.get("gunicorn_worker_restarts"):
        text += f"; {cell['gunicorn_worker_restarts']} gunicorn worker restarts (max_requests)"
    spread = cell.get("gunicorn_worker_cpu_s") or []
    if len(spread) > 1 and spread[-1] < 0.5 * spread[0]:
        text += f"; uneven worker CPU s {spread} (keep-alive connections held by one worker)"
    slots = MODEL_SLOTS.get(cell["system"])
    if slots and cell["delay_ms"]:
        text += f"; concurrency bound {slots / (cell['delay_ms'] / 1000):.0f} req/s ({slots} slots)"
    return text


def evaluate_targets(report: dict) -> list[dict]:
    cells = report.get("cells", [])
    cpus = report.get("machine", {}).get("cpus") or 2
    targets = []

    def add(name, reached, value, met, why=""):
        targets.append({"target": name, "reached": reached, "value": value, "met": met, "why": why})

    gateways = [("gateway (nginx+gunicorn)", "create"), (SPEND_SYSTEM, "create")] + [
        (f"gateway ({label})", "workers") for label, _, _ in WORKER_MODELS
    ]
    for system, section in gateways:
        for conns in MODEL_CONNECTIONS:
            gw = _find(cells, section, system, 150, conns)
            bl = _find(cells, "create", "baseline", 150, conns)
            if not gw or not bl:
                continue
            limit = conns / 0.150
            ok = gw["rps"] >= 0.95 * limit and gw["rps"] >= bl["rps"] and gw["errors"] == 0
            add(
                f"D=150 c={conns} {system}: >= 95% of {limit:.0f} req/s and >= baseline",
                f"{gw['rps']} req/s = {gw['rps'] / limit:.0%} of limit; baseline {bl['rps']}",
                round(gw["rps"] / limit, 3),
                ok,
                "" if ok else bounds(gw, cpus) + f". Baseline: {bounds(bl, cpus)}",
            )
        gw = _find(cells, section, system, 150, 64)
        if gw:
            added = gw["p99_ms"] - 150
            add(
                f"D=150 c=64 {system}: p99 added over D <= 15 ms",
                f"p99 {gw['p99_ms']} ms (+{added:.1f} ms), p50 {gw['p50_ms']} ms",
                round(added, 1),
                added <= 15,
                "" if added <= 15 else "queueing for CPU or slots: " + bounds(gw, cpus),
            )
    for conns in CONNECTIONS:
        gw = _find(cells, "create", "gateway", 0, conns)
        bl = _find(cells, "create", "baseline", 0, conns)
        if gw and bl:
            ratio = gw["rps"] / max(bl["rps"], 1)
            per_cpu = cpu_ms_total(bl) / max(cpu_ms_total(gw), 0.001)
            add(
                f"D=0 c={conns}: >= 60% of baseline req/s",
                f"{gw['rps']} vs {bl['rps']} req/s = {ratio:.0%} (per CPU-second: {per_cpu:.0%})",
                round(ratio, 3),
                ratio >= 0.6,
                f"gateway {cpu_ms_total(gw):.2f} vs baseline {cpu_ms_total(bl):.2f} ms CPU "
                "per request; see the profile",
            )
    trips = report.get("redis_round_trips") or {}
    refused = trips.get("refused_origin")
    if refused:
        add(
            "refused origin: <= 1 Redis round trip, no upstream call",
            f"{refused['round_trips_per_request']} round trips, "
            f"{refused['upstream_calls_per_request']} upstream calls per refusal",
            refused["round_trips_per_request"],
            refused["round_trips_per_request"] <= 1 and refused["upstream_calls_per_request"] == 0,
        )
    for conns in (64, 256):
        create = _find(cells, "create", "gateway", 0, conns)
        for kind in ("refused origin", "rate limited"):
            cell = _find(cells, "refusal", f"gateway: {kind}", 0, conns)
            if create and cell:
                ratio = cell["rps"] / max(create["rps"], 1)
                add(
                    f"{kind} c={conns}: >= 3x create req/s at D=0",
                    f"{cell['rps']} vs {create['rps']} req/s = {ratio:.1f}x",
                    round(ratio, 2),
                    ratio >= 3,
                    ""
                    if ratio >= 3
                    else f"refusal {cpu_ms_total(cell):.2f} vs create "
                    f"{cpu_ms_total(create):.2f} ms CPU per request: the fixed per-request "
                    "cost (gunicorn, Flask, logging) dominates; " + bounds(cell, cpus),
                )
    with_metrics = _find(cells, "workers", "gateway (gevent 3x1000 (production default))", 0, 64)
    without = _find(cells, "workers", "gateway (gevent 3x1000, METRICS_ENABLED=0)", 0, 64)
    if with_metrics and without:
        ratio = with_metrics["rps"] / max(without["rps"], 1)
        add(
            "metrics on: created-call rate >= 95% of metrics off (D=0 c=64)",
            f"{with_metrics['rps']} vs {without['rps']} req/s = {ratio:.1%}",
            round(ratio, 3),
            ratio >= 0.95,
            f"{cpu_ms_total(with_metrics):.2f} vs {cpu_ms_total(without):.2f} ms CPU per request",
        )
    waited = _find(cells, "workers", "gateway (gevent 3x1000, REDIS_WAIT_REPLICAS=1)", 0, 64)
    if with_metrics and waited:
        ratio = waited["rps"] / max(with_metrics["rps"], 1)
        add(
            "REDIS_WAIT_REPLICAS=1: its cost on the created-call rate, measured (D=0 c=64)",
            f"{waited['rps']} vs {with_metrics['rps']} req/s = {ratio:.1%}; p50 "
            f"{waited['p50_ms']} vs {with_metrics['p50_ms']} ms",
            round(ratio, 3),
            True,
            "a measurement, not a goal: WAIT trades latency for a record on a replica",
        )
    created = trips.get("created")
    if created:
        add(
            "<= 3 Redis round trips per created call",
            f"{created['round_trips_per_request']}",
            created["round_trips_per_request"],
            created["round_trips_per_request"] <= 3,
        )
    return targets + browser_targets(report)


def _cell_row(cell: dict) -> str:
    cpu = ", ".join(f"{k} {v}" for k, v in cell["cpu_ms_per_request"].items())
    has_gunicorn = "gunicorn" in cell["cpu_ms_per_request"]
    restarts_seen = cell.get("gunicorn_worker_restarts", 0) if has_gunicorn else "-"
    return (
        f"| {cell['system']} | {cell['delay_ms']} | {cell['connections']} | {cell['rps']:.0f} "
        f"| {cell['p50_ms']} | {cell['p99_ms']} | {cell['errors']} "
        f"| {cell['upstream_calls_per_request']} | {cpu} "
        f"| {', '.join(str(x) for x in cell.get('gunicorn_worker_cpu_s', [])) or '-'} "
        f"| {restarts_seen} "
        f"| {cell['foreign_cpu_cores']}{_retried(cell)} |"
    )


def _retried(cell: dict) -> str:
    other = cell.get("other_attempt")
    if not other:
        return ""
    return (
        f" (re-measured; other attempt {other['rps']:.0f} req/s, p99 {other['p99_ms']} ms "
        f"at {other['foreign_cpu_cores']} cores)"
    )


CELL_HEAD = (
    "| system | D ms | conns | req/s | p50 ms | p99 ms | errors | upstream/req "
    "| CPU ms/req by process | CPU s per gunicorn worker | worker restarts "
    "| other tenants' load (cores) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def markdown(report: dict) -> str:
    cells = report["cells"]
    lines = [
        f"# Benchmark results {report['date']}",
        "",
        "Written by `make bench` (bench/run.py) from this run's measurements; see "
        "bench/README.md for what each number means.",
        "",
        f"Machine: {report['machine']['cpus']} CPUs, {report['machine']['platform']}, "
        f"Python {report['machine']['python']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in report['machine']['loadavg_at_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in report.get('loadavg_at_end', ()))}. "
        f"Cells: {report['settings']['duration_s']} s measured after "
        f"{report['settings']['warmup_s']} s warm-up, "
        f"wrk -t{report['settings'].get('wrk_threads', WRK_THREADS)}, --timeout 10s. "
        f"Whole run {report['elapsed_s']} s.",
        "",
    ]
    if report.get("versions"):
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    lines += [
        "## Targets",
        "",
        "| target | reached | met | reason (from this run's measurements) |",
        "|---|---|---|---|",
    ]
    for t in report["targets"]:
        met = "yes" if t["met"] else "**no**"
        lines.append(f"| {t['target']} | {t['reached']} | {met} | {t.get('why', '')} |")
    for title, section in (
        ("1. create-web-call", "create"),
        ("Fake Retell (stdlib server) measured directly", "fake"),
        ("2. The cost of saying no (D=0)", "refusal"),
        ("5. Worker models (D=0 c=64; D=150 ms c=64, 256)", "workers"),
        ("Profile cell (py-spy attached)", "profile"),
    ):
        rows = [c for c in cells if c["section"] == section]
        if rows:
            lines += ["", f"## {title}", "", CELL_HEAD, *(_cell_row(c) for c in rows)]
        if rows and section == "workers":
            for conns in MODEL_CONNECTIONS:
                ranked = sorted(
                    (c for c in rows if c["connections"] == conns and c["delay_ms"] == 150),
                    key=lambda c: -c["rps"],
                )
                lines.append(
                    f"\nAt D=150 ms, c={conns}: "
                    + "; ".join(
                        f"{c['worker_model']} {c['rps']:.0f} req/s, p99 {c['p99_ms']} ms, "
                        f"{cpu_ms_total(c):.2f} ms CPU/req"
                        for c in ranked
                    )
                    + "."
                )
    trips = report.get("redis_round_trips")
    if trips:
        lines += [
            "",
            "## 3. Redis round trips per request (MONITOR; commandstats deltas)",
            "",
            "| request | status | round trips | client commands | inside the script "
            "| commandstats delta | upstream calls |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind, t in trips.items():
            lines.append(
                f"| {kind} | {_statuses(t['statuses'])} | {t['round_trips_per_request']} "
                f"| {_kv(t['client_commands_per_request'])} "
                f"| {_kv(t['script_commands_per_request'])} "
                f"| {_kv(t['commandstats_delta_per_request'])} "
                f"| {t['upstream_calls_per_request']} |"
            )
    models = report.get("worker_models")
    if models:
        lines += [
            "",
            "## 4. Resident memory per gunicorn worker (after the model's cells)",
            "",
            "| worker model | RSS per worker MiB | worker restarts (max_requests) "
            "| 'pool is full' warnings |",
            "|---|---|---|---|",
        ]
        for m in models:
            rss = ", ".join(str(w["rss_mib"]) for w in m["rss_per_worker"])
            lines.append(
                f"| {m['model']} | {rss} | {m['worker_restarts']} | {m['pool_full_warnings']} |"
            )
    for profile in report.get("profiles") or []:
        if not profile:
            continue
        lines += [
            "",
            f"## Where the time goes at D=0: {profile['kind']} (py-spy --gil, workers, c=64)",
            "",
            f"{profile['samples']} samples of threads holding the GIL (Python CPU time); "
            f"throughput while attached {profile['cell_rps_under_profiler']} req/s. "
            "Inclusive shares (a sample counts for every group on its stack):",
            "",
            "| group | % of samples |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in profile["inclusive_percent"].items()),
            "",
            "Top functions by self time:",
            "",
            "| function | % |",
            "|---|---|",
            *(f"| `{name}` | {pct} |" for name, pct in profile["top_self_percent"]),
        ]
    lines += browser_markdown(report)
    if report.get("notes"):
        lines += ["", "## Notes", "", *(f"- {note}" for note in report["notes"])]
    return "\n".join(lines) + "\n"


def _statuses(statuses: dict) -> str:
    """{201: 100} from a run's int keys and from the JSON's string keys alike."""
    return str({int(code): n for code, n in statuses.items()})


def _kv(values: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items())) or "-"


def md_path_for(json_path: Path) -> Path:
    """results/<date>.json -> results/<date>.md; a .json.tmp gives a .md.tmp."""
    name = json_path.name
    if ".json" not in name:
        raise ValueError(f"{json_path}: not a results .json file")
    return json_path.with_name(name.replace(".json", ".md", 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Rebuild a run's Markdown report from its results JSON (no load is run).",
    )
    parser.add_argument("results", type=Path, help="bench/results/<date>.json (or .json.tmp)")
    parser.add_argument(
        "--write",
        action="store_true",
        help="write the Markdown next to the JSON (<date>.md) instead of printing it",
    )
    parser.add_argument(
        "--recompute-targets",
        action="store_true",
        help="evaluate the targets again from the cells instead of using the recorded ones",
    )
    args = parser.parse_args(argv)
    report = json.loads(args.results.read_text())
    if args.recompute_targets or "targets" not in report:
        report["targets"] = evaluate_targets(report)
    text = markdown(report)
    if args.write:
        out = md_path_for(args.results)
        out.write_text(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
