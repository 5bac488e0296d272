"""GET /metrics (app/metrics.py): what is counted, who may read it, and the Grafana
dashboard and Prometheus rules in deploy/grafana/ that read it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import metrics
from app.usage.entry import OUTCOMES
from tests.helpers import AGENT, CHAT_AGENT, ORIGIN, grant_chat, post, send, start_chat
from tests.test_webhooks import deliver

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"


def samples(client) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from /metrics."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_path_is_counted_without_a_redis_round_trip_more(
    client, redis, allow_origin, fake_retell, round_trips
):
    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    post(client, origin="https://evil.example")  # loads the scripts (not counted below)
    post(client)
    before = samples(client)
    with round_trips() as count:
        assert post(client).status_code == 201
    assert count() == 2  # one to decide, one to record: as without metrics
    with round_trips() as count:
        assert post(client, origin="https://evil.example").status_code == 403
    assert count() == 1
    fake_retell.set_behaviour("error", status=500)
    assert post(client).status_code == 502
    fake_retell.set_behaviour()
    chat = start_chat(client, {"agent_id": CHAT_AGENT}).json
    assert send(client, chat["chat_token"], "hello").status_code == 200
    call = post(client).json["call_id"]
    key = client.application.config["SETTINGS"].retell_api_key.reveal()
    assert (
        deliver(client, key, "call_ended", {"call_id": call, "duration_ms": 1000}).status_code
        == 204
    )
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("widget_create_attempts_total", outcome="created") == 2
    assert delta("widget_create_attempts_total", outcome="origin_denied") == 1
    assert delta("widget_create_attempts_total", outcome="upstream_error") == 1
    assert delta("widget_chat_attempts_total", outcome="created") == 1
    assert delta("widget_chat_messages_total", outcome="sent") == 1
    assert delta("widget_upstream_seconds_count", api="create-web-call", status="201") == 2
    assert delta("widget_upstream_seconds_count", api="create-web-call", status="500") == 1
    assert delta("widget_upstream_seconds_count", api="create-chat", status="201") == 1
    assert delta("widget_admission_seconds_count", kind="call") == 4
    assert delta("widget_admission_seconds_count", kind="chat") == 1
    assert delta("widget_webhook_events_total", event="call_ended", outcome="accepted") == 1
    assert value(after, "widget_live_calls") == 2  # the warm-up's and the second: unsettled
    assert value(after, "widget_live_chats") == 1


def test_redis_errors_are_counted_once_per_request(make_app, allow_origin):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{port}/0").test_client()
    before = value(samples(client), "widget_redis_errors_total")
    assert post(client).status_code == 503
    after = samples(client)  # the scrape met Redis's absence too (live counts): one more
    assert value(after, "widget_redis_errors_total") - before == 2
    assert value(after, "widget_create_attempts_total", outcome="unavailable") >= 1
    assert ("widget_live_calls", ()) not in after  # left out, not a made-up zero


def test_only_listed_addresses_may_read_it(make_app):
    client = make_app(METRICS_ALLOW_FROM="127.0.0.1, 10.0.0.0/24").test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.0.7"}).status_code == 200
    refused = client.get("/metrics", environ_base={"REMOTE_ADDR": "10.0.1.7"})
    assert refused.status_code == 403 and b"widget_" not in refused.data
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.2"}).status_code == 403


def test_metrics_can_be_turned_off(make_app, allow_origin):
    allow_origin(ORIGIN, AGENT)
    try:
        client = make_app(METRICS_ENABLED="0").test_client()
        before = metrics.CREATE_ATTEMPTS.labels("created")._value.get()
        assert post(client).status_code == 201
        assert metrics.CREATE_ATTEMPTS.labels("created")._value.get() == before
        assert client.get("/metrics").status_code == 404
    finally:
        make_app()  # metrics are per process: on again for the tests after this one


def test_attempt_outcomes_are_the_usage_streams():
    assert set(metrics.ATTEMPT_OUTCOMES.values()) <= set(OUTCOMES)


# -- deploy/grafana ---------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def alert_exprs() -> list[str]:
    text = (GRAFANA / "alerts.yml").read_text()
    import yaml

    rules = yaml.safe_load(text)["groups"][0]["rules"]
    names = {rule["alert"] for rule in rules}
    assert {"WidgetGatewayRedisErrors", "WidgetGatewayUpstream5xx",
            "WidgetGatewayUsageWriteFailures"} <= names  # fmt: skip
    return [rule["expr"] for rule in rules]


def test_dashboard_and_alerts_read_only_metrics_the_gateway_serves(
    client, redis, allow_origin, fake_retell, tmp_path, monkeypatch
):
    """Every family appears once its path ran: calls, chats, webhooks, a Redis error, a
    usage write failure, the spool."""
    import redis as redis_lib

    allow_origin(ORIGIN, AGENT)
    grant_chat(redis, ORIGIN, CHAT_AGENT)
    post(client)
    send(client, start_chat(client, {"agent_id": CHAT_AGENT}).json["chat_token"], "hi")
    key = client.application.config["SETTINGS"].retell_api_key.reveal()
    deliver(client, key, "call_ended", {"call_id": "call_unknown", "duration_ms": 1})
    ledger = client.application.extensions["ledger"]

    def gone(payload):
        raise redis_lib.ConnectionError("gone")

    monkeypatch.setattr(ledger, "_run", gone)
    post(client)  # a usage write failure; spooled (lost here: no USAGE_SPOOL_DIR)
    monkeypatch.undo()
    served = {family.name for family in text_string_to_metric_families(
        client.get("/metrics").get_data(as_text=True))}  # fmt: skip
    served |= {f"{name}_total" for name in served} | {
        f"{name}_{suffix}" for name in served for suffix in ("bucket", "count", "sum")
    }
    served.add("widget_spool_pending")  # only with USAGE_SPOOL_DIR: tests/test_spool.py
    for expr in dashboard_exprs() + alert_exprs():
        for name in re.findall(r"\bwidget_[a-z_]+", expr):
            assert name in served, (name, expr)


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (prometheus)")
def test_promtool_accepts_the_rules_and_the_dashboards_queries(tmp_path):
    check = subprocess.run(["promtool", "check", "rules", str(GRAFANA / "alerts.yml")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # The dashboard's queries, as recording rules: promtool parses each.
    import yaml

    exprs = [e.replace("$__rate_interval", "5m").replace('"$instance"', '".*"')
             for e in dashboard_exprs()]  # fmt: skip
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
