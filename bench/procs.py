"""Processes the bench starts, and what /proc says about them and about the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from bench.config import ROOT


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def cpu_ticks(pid: int, with_children: bool = False) -> int:
    """utime+stime of one process (plus its reaped children's), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # after ")": state=0 ... utime=11 stime=12 cutime=13 cstime=14
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Proc:
    """A process we started, in its own process group; stopped by its own id only."""

    def __init__(self, name: str, cmd: list, env: dict, workdir: Path, cwd: Path = ROOT):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 -- closed in stop()
        self.popen = subprocess.Popen(
            [str(c) for c in cmd],
            env=env,
            cwd=cwd,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        children = _children()
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, []))
        return pids

    def children(self) -> list[int]:
        return sorted(_children().get(self.pid, []))

    def cpu_ticks(self) -> int:
        """CPU of the live tree plus reaped children (recycled gunicorn workers)."""
        return sum(cpu_ticks(pid, pid == self.pid) for pid in self.tree())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen.poll() is None:
            # The group this Popen created (start_new_session), nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self.log_file.close()

    def log_text(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")


# What gunicorn's log says (the master's log holds its workers' output too).


def restarts(text: str) -> int:
    return text.count("Autorestarting worker")


def pool_full_warnings(text: str) -> int:
    return text.count("Connection pool is full")


def npm_ci(directory: Path) -> None:
    """`npm ci` in a bench/ package (baseline/, lighthouse/) when its node_modules is
    missing or older than its lock file."""
    marker = directory / "node_modules" / ".package-lock.json"
    lock = directory / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    log(f"npm ci in {directory.relative_to(ROOT)}")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        check=True,
        timeout=300,
    )
