"""The usage spool: records Redis could not take after Retell had already acted.

A call Retell created while Redis went away (admitted, minted, then the record round trip
failed) is money spent with no record. The ledger's request for that round trip is kept
here instead, one JSON line per record in USAGE_SPOOL_DIR (the systemd unit's state
directory), and replayed once Redis answers again: by a background thread of the process
that wrote it (and of any process whose first request finds lines left), and by
`flask --app wsgi usage replay`. A line is applied once: the ledger's script checks its
`replayed:<request_id>:<n>` marker (the line's id), and the call or chat record a first
write may have left, in the same step (calls.lua, chats.lua). Nothing secret is in a
line: the ledger's request holds ids, keys and the usage entry, never the Retell key or a
call's access token.

Files: every process appends to pending.jsonl (O_APPEND, one write per line, fsync'd,
under flock). A replay renames it to replaying-<pid>-<n>.jsonl first, so writers start a
new one, takes the lock once to let a write in flight finish, applies the lines and
deletes the file; lines Redis cannot take yet go back to pending.jsonl, lines that can
never apply go to rejected.jsonl for the operator. A replaying file whose process died is
taken over by the next replay.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from app import metrics

log = logging.getLogger(__name__)

PENDING, REJECTED, CLAIM = "pending.jsonl", "rejected.jsonl", "replaying-"
STALE_CLAIM_S = 600  # a claim older than this is taken over even if its PID looks alive
BATCH = 500  # lines one pass applies; the rest wait for the next pass
BACKOFF_S = (1, 2, 5, 10, 30)  # the background replay's waits while Redis stays away
VERSION = 1


@dataclasses.dataclass
class Replayed:
    applied: int = 0  # written to Redis now
    duplicate: int = 0  # already there (an earlier replay, or the first write after all)
    kept: int = 0  # Redis could not take them yet: back in pending.jsonl
    rejected: int = 0  # can never apply: moved to rejected.jsonl

    def add(self, other: Replayed) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))


def _has_record(payload: dict) -> bool:
    """Whether the replay can tell that the first write went through (its record exists)."""
    return payload.get("op") == "created" or bool(payload.get("usage", {}).get("chat_id"))


class Spool:
    """One per app. `handlers`: ledger name -> f(payload, marker) that applies a spooled
    request once per marker ("duplicate" when it was there already), or raises RedisError."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.handlers: dict[str, Callable[[dict], object]] = {}
        self.lost = 0  # records neither Redis nor the spool took, in this process
        self.rejected = 0  # lines this process moved to rejected.jsonl
        self._lock = threading.Lock()
        self._replayer: tuple[int, threading.Thread] | None = None  # (pid, thread)

    # -- writing ---------------------------------------------------------------------
    def keep(self, ledger: str, payload: dict, exc: Exception) -> bool:
        """Appends what a failed record round trip asked (never raises): True if kept."""
        request_id = payload.get("usage", {}).get("request_id", "")
        what = f"{ledger} {payload.get('op')} request {request_id}"
        if isinstance(exc, redis.TimeoutError) and not _has_record(payload):
            # It may have been applied, and its replay could not tell: applying it twice
            # would give a reservation back twice. Kept out; the reservation stays (closed).
            log.error("usage record not spooled, Redis may have applied it (timeout): %s", what)
            return False
        if self.directory is None:
            return self._lose(what, "USAGE_SPOOL_DIR is not set")
        # The line's id marks it applied; a request id alone is not unique (a client may send
        # its own X-Request-ID).
        line = {"v": VERSION, "id": f"{request_id}:{secrets.token_hex(4)}", "ledger": ledger,
                "spooled_ms": int(time.time() * 1000), "payload": payload}  # fmt: skip
        try:
            self._append(PENDING, [json.dumps(line, separators=(",", ":"))])
        except OSError as error:
            return self._lose(what, f"{type(error).__name__}: {error.strerror or error}")
        metrics.spool_written("spooled")
        log.warning("usage record spooled for replay: %s", what)
        self.wake()
        return True

    def _lose(self, what: str, why: str) -> bool:
        with self._lock:
            self.lost += 1
        metrics.spool_written("lost")
        log.error("usage record LOST (Redis and the spool refused it, %s): %s", why, what)
        return False

    def _append(self, name: str, lines: list[str]) -> None:
        """One write per line under the file's lock, then fsync; retried if a replay took
        the file away between our open and our lock."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / name
        data = "".join(f"{line}\n" for line in lines).encode()
        for _ in range(100):  # a replay renames it at most once per pass
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not _same_file(fd, path):
                    continue  # renamed by a replay: open the new one
                created = os.fstat(fd).st_size == 0
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the new name must survive a crash too
                _fsync_dir(self.directory)
            return
        raise OSError(f"{path} kept changing under us")

    # -- reading ---------------------------------------------------------------------
    def status(self) -> dict:
        """For /api/health/ready: an unwritable directory is an error (a record would be
        lost at the next Redis outage); `lost` and `rejected` are this process's."""
        if self.directory is None:
            return {"status": "ok", "dir": None, "lost": self.lost}
        body = {"dir": str(self.directory), "pending": self.pending(), "lost": self.lost,
                "rejected": self.rejected}  # fmt: skip
        if self.writable():
            return {"status": "ok", **body}
        return {"status": "error", "detail": "not writable", **body}

    def writable(self) -> bool:
        directory = self.directory
        if directory.exists():
            return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)
        parent = next((p for p in directory.parents if p.exists()), None)
        return parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)

    def pending(self) -> int:
        """Lines waiting on this host (pending and replaying files)."""
        return sum(_count_lines(path) for path in self._files())

    def _files(self) -> list[Path]:
        if self.directory is None or not self.directory.is_dir():
            return []
        names = self.directory.iterdir()
        return [p for p in names if p.name == PENDING or p.name.startswith(CLAIM)]

    # -- replaying -------------------------------------------------------------------
    def replay(self) -> Replayed:
        """One pass over every line on this host (pending, and claims whose replayer died);
        stops early while Redis is away. Returns what happened to the lines."""
        done = Replayed()
        for path in self._claims():
            done.add(self._replay_file(path))
            if done.kept:
                break  # Redis is away: the other files wait too
        metrics.spool_replayed("applied", done.applied)
        metrics.spool_replayed("duplicate", done.duplicate)
        metrics.spool_replayed("rejected", done.rejected)
        if done.applied or done.kept or done.rejected:
            log.info("usage spool replay: %s", dataclasses.asdict(done))
        return done

    def _claims(self) -> list[Path]:
        """Renames each file this pass may replay to a claim of ours (atomic: one winner)."""
        claimed = []
        for path in self._files():
            if path.name.startswith(CLAIM) and not _abandoned(path):
                continue  # another process is replaying it
            target = path.with_name(f"{CLAIM}{os.getpid()}-{time.time_ns()}.jsonl")
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # someone else took it
            claimed.append(target)
        return claimed

    def _replay_file(self, path: Path) -> Replayed:
        done = Replayed()
        with open(path, "rb") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # a write in flight finishes first
            lines = file.read().decode("utf-8", "replace").splitlines()
        left, rejected = [], []
        for number, text in enumerate(lines):
            if not text.strip():
                continue
            if done.kept or number >= BATCH:
                left.append(text)
                continue
            outcome = self._apply(text)
            if outcome == "kept":
                left.append(text)
            elif outcome == "rejected":
                rejected.append(text)
            setattr(done, outcome, getattr(done, outcome) + 1)
        try:
            if left:
                self._append(PENDING, left)
            if rejected:
                self._append(REJECTED, rejected)
                with self._lock:
                    self.rejected += len(rejected)
        except OSError as exc:  # the claim stays; a later replay takes it over (idempotent)
            log.error("usage spool: %s not rewritten (%s)", path.name, exc)
            return done
        path.unlink()
        return done

    def _apply(self, text: str) -> str:
        """applied | duplicate | kept | rejected, for one line."""
        try:
            line = json.loads(text)
            handler = self.handlers[line["ledger"]]
            payload, marker = line["payload"], line["id"]
            if line.get("v") != VERSION or not isinstance(payload, dict) or not marker:
                raise ValueError("unknown line version")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("usage spool: unreadable line rejected (%s)", type(exc).__name__)
            return "rejected"
        try:
            outcome = handler(payload, marker)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("usage spool: Redis still unavailable (%s)", type(exc).__name__)
            metrics.redis_error()
            return "kept"
        except redis.RedisError as exc:  # Redis answered, and refused it: not worth retrying
            log.error("usage spool: line rejected by Redis (%s: %s)", type(exc).__name__, exc)
            return "rejected"
        return "duplicate" if outcome == "duplicate" else "applied"

    def wake(self) -> None:
        """Starts this process's background replay unless it runs: it replays until the
        spool is empty, waiting longer between passes while Redis stays away."""
        if self.directory is None or not self.handlers:
            return
        with self._lock:
            running = self._replayer
            if running and running[0] == os.getpid() and running[1].is_alive():
                return
            thread = threading.Thread(target=self._replay_until_empty, name="usage-spool-replay",
                                      daemon=True)  # fmt: skip
            self._replayer = (os.getpid(), thread)
        thread.start()

    def _replay_until_empty(self) -> None:
        waits = 0
        time.sleep(BACKOFF_S[0])  # Redis rarely answers the instant it failed
        while any(p.name == PENDING or _abandoned(p) for p in self._files()):
            try:
                done = self.replay()
            except OSError as exc:
                log.error("usage spool replay failed: %s", exc)
                done = Replayed(kept=1)
            if done.kept:
                time.sleep(BACKOFF_S[min(waits, len(BACKOFF_S) - 1)])
                waits += 1
            else:
                waits = 0


def init_app(app) -> Spool:
    """The app's spool, given to its ledgers; the first request of each process starts
    a replay if lines were left (by a worker that died, or before a restart)."""
    spool = Spool(app.config["SETTINGS"].usage_spool_dir)
    calls, chats = app.extensions["ledger"], app.extensions["chats"]
    calls.spool = chats.spool = spool
    spool.handlers = {"calls": calls.replay, "chats": chats.replay}
    app.extensions["spool"] = spool
    checked = [0]  # the pid that looked: a forked worker looks again

    @app.before_request
    def replay_leftovers():
        if checked[0] != os.getpid():
            checked[0] = os.getpid()
            if spool._files():
                spool.wake()

    return spool


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as file:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(65536), b""))
    except FileNotFoundError:
        return 0  # replayed meanwhile


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _abandoned(path: Path) -> bool:
    """A claim whose process is gone (or that is too old to be anyone's pass)."""
    try:
        pid = int(path.name[len(CLAIM) :].split("-", 1)[0])
        age = time.time() - path.stat().st_mtime
    except (ValueError, FileNotFoundError):
        return False
    if age > STALE_CLAIM_S:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
