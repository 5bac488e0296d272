"""Where the time goes at D=0: py-spy attached to the gunicorn workers during one cell,
summed up as inclusive shares of named groups and the top functions by self time."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from bench.config import DURATION, PYSPY_VERSION, VENV_BIN
from bench.harness import Bench
from bench.procs import log

PROFILE_GROUPS = (
    # (label, substrings of py-spy frames "function (path:line)"): inclusive shares.
    # The app's paths follow its package layout (app/policy, app/retell, app/usage, app/http).
    ("Flask app: full_dispatch_request (all the view work)", ("full_dispatch_request (flask/",)),
    ("admission: build args + EVALSHA (app/policy/admission.py)", ("(app/policy/admission.py",)),
    ("upstream create (app/retell/calls.py)", ("(app/retell/",)),
    ("usage entry: XADD after the call (app/usage/stream.py)", ("record (app/usage/stream.py",)),
    ("redis-py, both round trips", ("(redis/",)),
    (
        "HTTP client: urllib3 + http.client (+ requests)",
        ("(requests/", "(urllib3/", "(http/client.py"),
    ),
    (
        "logging: app JSON lines + gunicorn JSON access log",
        ("(logging/", "glogging.py", "(app/logs.py", "gunicorn.conf.py"),
    ),
    ("json encode/decode", ("(json/",)),
    ("CORS headers (app/http/cors.py)", ("(app/http/cors.py",)),
    ("gunicorn: HTTP parsing + response writing", ("(gunicorn/http/", "(gunicorn/util.py")),
    ("worker (re)start: imports (max_requests recycling)", ("<frozen importlib",)),
)


def ensure_pyspy() -> Path | None:
    binary = VENV_BIN / "py-spy"
    if not binary.exists():
        log(f"installing py-spy=={PYSPY_VERSION} into the venv (bench only)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             f"py-spy=={PYSPY_VERSION}"],
            check=False,
            timeout=300,
        )  # fmt: skip
    return binary if binary.exists() else None


def profile_summary(raw: str) -> dict:
    total = 0
    inclusive = dict.fromkeys((label for label, _ in PROFILE_GROUPS), 0)
    self_time: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n = int(count)
        total += n
        for label, needles in PROFILE_GROUPS:
            if any(needle in frame for frame in frames for needle in needles):
                inclusive[label] += n
        leaf = re.sub(r":\d+\)$", ")", frames[-1])
        self_time[leaf] = self_time.get(leaf, 0) + n
    top = sorted(self_time.items(), key=lambda item: -item[1])[:15]
    return {
        "samples": total,
        "inclusive_percent": {k: round(100 * v / max(total, 1), 1) for k, v in inclusive.items()},
        "top_self_percent": [[name, round(100 * n / max(total, 1), 1)] for name, n in top],
    }


def run_profile(
    bench: Bench, gateway_url: str, groups: dict, kind: str, origin: str, expect: int
) -> dict | None:
    pyspy = ensure_pyspy()
    if pyspy is None:
        bench.notes.append("py-spy could not be installed: no profile this run")
        return None
    out_path = bench.workdir / f"profile-{kind}.txt"
    seconds = max(DURATION - 2, 1)

    def record() -> None:
        time.sleep(1)
        cmd = [
            pyspy,
            "record",
            "--pid",
            bench.gunicorn.pid,
            "--subprocesses",
            "--rate",
            200,
            "--duration",
            seconds,
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            out_path,
        ]
        subprocess.run(
            [str(part) for part in cmd],
            capture_output=True,
            timeout=seconds + 60,
        )  # fmt: skip

    cell = bench.cell(
        "profile", f"gateway under py-spy: {kind}", f"{gateway_url}/api/create-web-call", 64,
        0, expect, origin=origin, groups=groups, during=record,
    )  # fmt: skip
    if not out_path.exists():
        bench.notes.append("py-spy produced no profile (ptrace not permitted?)")
        return None
    summary = profile_summary(out_path.read_text(errors="replace"))
    summary["kind"] = kind
    summary["cell_rps_under_profiler"] = cell["rps"]
    return summary
