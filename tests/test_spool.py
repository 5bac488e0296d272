"""The usage spool (app/usage/spool.py): a record Redis could not take after Retell acted is
kept on disk and replayed once Redis answers, exactly once."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib

from app import create_app
from app.usage.spool import PENDING, REJECTED, Spool
from devtools.ports import wait_for_port, wait_until
from tests.conftest import REDIS_BINARY, RedisServer, app_config
from tests.helpers import AGENT, CHAT_AGENT, ORIGIN, post, start_chat

ROOT = Path(__file__).resolve().parents[1]


class DurableRedis(RedisServer):
    """The test's own redis-server, appending every write: a restart keeps what it had."""

    def start(self) -> DurableRedis:
        self.process = subprocess.Popen(
            [REDIS_BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
             "--logfile", f"{self.dir}/redis.log"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)
        return self


@pytest.fixture
def own_redis():
    server = DurableRedis().start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


def created_entries(client, kind="call") -> list[dict]:
    entries = [fields for _, fields in client.xrange("widget:usage")]
    return [e for e in entries if e["kind"] == kind and e["outcome"] != "rate_limited"]


def spool_lines(directory: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(directory.glob("*.jsonl"))
            if p.name != REJECTED for line in p.read_text().splitlines()]  # fmt: skip


def test_a_call_minted_while_redis_died_is_recorded_once(own_redis, fake_retell, tmp_path):
    spool_dir = tmp_path / "spool"
    app = create_app(app_config(own_redis, fake_retell, USAGE_SPOOL_DIR=str(spool_dir)))
    store = own_redis.client()
    store.sadd("widget:origins", ORIGIN)
    store.sadd(f"widget:agents:{ORIGIN}", AGENT)
    fake_retell.set_behaviour(delay=1.0)  # Retell takes a second: Redis dies meanwhile
    answered = {}
    thread = threading.Thread(target=lambda: answered.update(r=post(app.test_client())))
    thread.start()
    assert wait_until(lambda: fake_retell.requests, 5)  # admitted: Retell is asked
    own_redis.stop()
    thread.join(15)
    response = answered["r"]
    assert response.status_code == 201, response.get_data(as_text=True)  # the call is real
    call_id, token = response.json["call_id"], response.json["access_token"]

    [line] = spool_lines(spool_dir)
    text = (spool_dir / PENDING).read_text()
    assert fake_retell.api_key not in text and token not in text  # nothing secret on disk
    assert (line["ledger"], line["payload"]["op"], line["payload"]["call_id"]) == (
        "calls",
        "created",
        call_id,
    )
    ready = app.test_client().get("/api/health/ready").json["components"]
    assert ready["spool"]["status"] == "ok" and ready["spool"]["pending"] == 1

    own_redis.start()  # the app replays by itself once Redis answers
    assert wait_until(lambda: not list(spool_dir.glob("*.jsonl")), 30), spool_lines(spool_dir)
    [entry] = created_entries(store)
    assert (entry["outcome"], entry["call_id"], entry["status"]) == ("created", call_id, "201")
    record = store.hgetall(f"widget:call:{call_id}")
    assert record["request_id"] == entry["request_id"] == line["payload"]["usage"]["request_id"]
    assert store.zscore("widget:calls:open", call_id) is not None

    runner = app.test_cli_runner()
    for _ in range(2):  # replaying again applies nothing
        result = runner.invoke(args=["usage", "replay"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("0 applied, 0 already there, 0 kept")
    # A line left twice (a replayer that died before deleting it) is applied once too.
    (spool_dir / PENDING).write_text(json.dumps(line) + "\n")
    result = runner.invoke(args=["usage", "replay"])
    assert result.output.startswith("0 applied, 1 already there"), result.output
    assert len(created_entries(store)) == 1
    assert store.hlen(f"widget:call:{call_id}") == len(record)

    # The marker is a key the README's key table documents.
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Redis keys") : readme.index("### The same with the CLI")]
    markers = store.keys("widget:replayed:*")
    assert markers
    documented = [n for n in re.findall(r"`(widget:[^`]+)`", table) if "replayed" in n]
    assert documented
    parts = re.split(r"(<[^>]+>)", documented[0])
    pattern = re.compile("^" + "".join(".+" if x.startswith("<") else re.escape(x) for x in parts))
    assert all(pattern.match(key) for key in markers), (documented, markers)


def test_a_chat_given_up_while_redis_died_is_on_the_stream_once(
    own_redis, fake_retell, tmp_path, monkeypatch
):
    from app.extensions import chat_client

    spool_dir = tmp_path / "spool"
    app = create_app(app_config(own_redis, fake_retell, USAGE_SPOOL_DIR=str(spool_dir)))
    store = own_redis.client()
    store.sadd("widget:origins", ORIGIN)
    store.sadd(f"widget:chat-agents:{ORIGIN}", CHAT_AGENT)
    create = chat_client.create_chat

    def create_then_redis_dies(*args, **kwargs):
        made = create(*args, **kwargs)
        own_redis.stop()
        return made

    monkeypatch.setattr(chat_client, "create_chat", create_then_redis_dies)
    response = start_chat(app.test_client())
    assert response.status_code == 503 and response.json["error"] == "unavailable"
    [made] = fake_retell.chat.chats
    assert fake_retell.chat.chats[made]["chat_status"] == "ended"  # given up upstream
    [line] = spool_lines(spool_dir)
    assert line["payload"]["usage"]["chat_id"] == made

    own_redis.start()
    result = app.test_cli_runner().invoke(args=["usage", "replay"])
    if result.exit_code:  # the first command on a dead pooled connection may fail once
        result = app.test_cli_runner().invoke(args=["usage", "replay"])
    assert wait_until(lambda: created_entries(store, "chat"), 15), result.output
    [entry] = created_entries(store, "chat")
    assert (entry["outcome"], entry["status"], entry["chat_id"]) == ("unavailable", "503", made)
    assert app.test_cli_runner().invoke(args=["usage", "replay"]).output.startswith("0 applied")
    assert len(created_entries(store, "chat")) == 1


def test_an_unwritable_spool_is_logged_counted_and_not_ready(
    make_app, allow_origin, tmp_path, monkeypatch, caplog
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    app = make_app(USAGE_SPOOL_DIR=str(blocker / "spool"))
    allow_origin(ORIGIN, AGENT)

    def gone(payload):
        raise redis_lib.ConnectionError("gone")

    monkeypatch.setattr(app.extensions["ledger"], "_run", gone)
    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        assert post(client).status_code == 201
    assert any("usage record LOST" in r.getMessage() for r in caplog.records)
    ready = client.get("/api/health/ready")
    assert ready.status_code == 503
    spool = ready.json["components"]["spool"]
    assert (spool["status"], spool["detail"], spool["lost"]) == ("error", "not writable", 1)
    assert ready.json["components"]["usage_stream"]["write_failures"] >= 1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert re.search(r'^widget_spool_writes_total\{result="lost"\} [1-9]', metrics, re.M)


def test_a_write_redis_took_after_all_is_not_applied_twice(
    make_app, allow_origin, usage_entries, tmp_path, monkeypatch
):
    """A timeout after Redis ran the script: the replay finds the call record."""
    app = make_app(USAGE_SPOOL_DIR=str(tmp_path / "spool"))
    allow_origin(ORIGIN, AGENT)
    ledger = app.extensions["ledger"]
    run = ledger._run

    def ran_but_timed_out(payload):
        run(payload)
        raise redis_lib.TimeoutError("reply lost")

    monkeypatch.setattr(ledger, "_run", ran_but_timed_out)
    assert post(app.test_client()).status_code == 201
    monkeypatch.setattr(ledger, "_run", run)
    done = app.extensions["spool"].replay()
    assert (done.applied, done.duplicate) == (0, 1)
    assert [e["outcome"] for e in usage_entries()] == ["created"]


def test_a_release_that_may_have_run_is_not_spooled(make_app, allow_origin, tmp_path, monkeypatch,
                                                    fake_retell):  # fmt: skip
    """Giving a reservation back twice would hand out budget: a timeout keeps it out."""
    spool_dir = tmp_path / "spool"
    app = make_app(USAGE_SPOOL_DIR=str(spool_dir))
    allow_origin(ORIGIN, AGENT)
    fake_retell.set_behaviour("error", status=500)

    def timed_out(payload):
        raise redis_lib.TimeoutError("slow")

    monkeypatch.setattr(app.extensions["ledger"], "_run", timed_out)
    assert post(app.test_client()).status_code == 502
    assert not spool_dir.exists() or not list(spool_dir.iterdir())

    def refused(payload):
        raise redis_lib.ConnectionError("refused")

    monkeypatch.setattr(app.extensions["ledger"], "_run", refused)
    assert post(app.test_client()).status_code == 502
    [line] = spool_lines(spool_dir)
    assert line["payload"]["op"] == "released"


def test_unreadable_lines_are_set_aside(tmp_path):
    spool = Spool(tmp_path)
    seen = []
    spool.handlers = {"calls": lambda payload, marker: seen.append(marker)}
    good = {"v": 1, "id": "r1:00", "ledger": "calls", "payload": {"op": "created"}}
    (tmp_path / PENDING).write_text("{half a line\n" + json.dumps(good) + "\n")
    done = spool.replay()
    assert (done.applied, done.rejected) == (1, 1) and seen == ["r1:00"]
    assert (tmp_path / REJECTED).read_text() == "{half a line\n"
    assert spool.status()["pending"] == 0 and spool.status()["rejected"] == 1


def _append_many(directory: str, writer: int, count: int) -> None:
    spool = Spool(Path(directory))
    for n in range(count):
        payload = {"op": "created", "usage": {"request_id": f"w{writer}-{n}"}}
        assert spool.keep("calls", payload, redis_lib.ConnectionError())


def test_writers_in_several_processes_and_a_replay_lose_and_repeat_nothing(tmp_path):
    applied: list[str] = []
    spool = Spool(tmp_path)
    spool.handlers = {"calls": lambda payload, _: applied.append(payload["usage"]["request_id"])}
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_many, args=(str(tmp_path), w, 150)) for w in range(4)]
    for process in writers:
        process.start()
    while any(p.is_alive() for p in writers):  # replays race the writers' appends
        spool.replay()
        time.sleep(0.002)
    for process in writers:
        process.join(30)
        assert process.exitcode == 0
    spool.replay()
    assert sorted(applied) == sorted(f"w{w}-{n}" for w in range(4) for n in range(150))
    assert not list(tmp_path.glob("*.jsonl"))
