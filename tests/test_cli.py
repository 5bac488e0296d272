"""The operator CLI (flask --app wsgi ...) against a real redis-server."""

import datetime as dt
import json
import time

import pytest


def test_origins_add_canonicalises_and_list_shows_agents(runner, redis):
    result = runner.invoke(args=["origins", "add", "HTTPS://Client-A.com:443", "https://*.b.com"])
    assert result.exit_code == 0, result.output
    assert redis.smembers("widget:origins") == {"https://client-a.com", "https://*.b.com"}
    runner.invoke(args=["agents", "grant", "https://client-a.com", "agent_1", "agent_2"])
    listing = runner.invoke(args=["origins", "list"]).output
    assert "https://client-a.com\tagent_1, agent_2" in listing
    assert "https://*.b.com\t(no agents)" in listing


@pytest.mark.parametrize("bad", ["*", "null", "https://a.com/path", "a.com", "https://*.com"])
def test_origins_add_refuses_invalid(runner, redis, bad):
    result = runner.invoke(args=["origins", "add", bad])
    assert result.exit_code != 0
    assert not redis.exists("widget:origins")


def test_agents_grant_revoke_list(runner, redis):
    assert runner.invoke(args=["agents", "grant", "https://a.com", "agent_x"]).exit_code == 0
    assert redis.sismember("widget:origins", "https://a.com")
    assert runner.invoke(args=["agents", "list", "https://a.com"]).output.split() == ["agent_x"]
    assert runner.invoke(args=["agents", "grant", "https://a.com", "bad/agent"]).exit_code != 0
    runner.invoke(args=["agents", "revoke", "https://a.com", "agent_x"])
    assert not redis.smembers("widget:agents:https://a.com")


def test_origins_remove_drops_grants(runner, redis):
    runner.invoke(args=["agents", "grant", "https://a.com", "agent_x"])
    assert runner.invoke(args=["origins", "remove", "https://a.com"]).exit_code == 0
    assert not redis.exists("widget:origins") and not redis.exists("widget:agents:https://a.com")


def test_origins_check_reports_problems(runner, redis):
    redis.sadd("widget:origins", "*", "https://ok.com", "https://Upper.com", "https://lonely.com")
    redis.sadd("widget:agents:https://ok.com", "agent_x")
    result = runner.invoke(args=["origins", "check"])
    assert result.exit_code == 1
    assert "invalid entry '*'" in result.output
    assert "store it as 'https://upper.com'" in result.output
    assert "origin https://lonely.com has no agents" in result.output
    assert "https://ok.com" not in result.output


def test_origins_check_passes_on_a_clean_allowlist(runner, redis):
    runner.invoke(args=["agents", "grant", "https://ok.com", "agent_x"])
    assert runner.invoke(args=["origins", "check"]).exit_code == 0


def test_origins_check_reports_wrong_type(runner, redis):
    redis.set("widget:origins", "https://a.com")
    result = runner.invoke(args=["origins", "check"])
    assert result.exit_code == 1 and "not a set" in result.output


def test_snippet_prints_embed_html_with_sri(make_app, redis, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "version": "1.0.0",
                "files": {
                    "v1/retell-widget.js": {"integrity": "sha384-JS"},
                    "v1/retell-widget.css": {"integrity": "sha384-CSS"},
                },
            }
        )
    )
    runner = make_app(WIDGET_MANIFEST=str(manifest)).test_cli_runner()
    runner.invoke(args=["agents", "grant", "https://a.com", "agent_x"])
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test/"])
    assert result.exit_code == 0, result.output
    # No stylesheet link: the loader fetches it (pinned too) into its shadow root.
    assert "<link" not in result.output
    assert 'data-proxy-endpoint="https://cdn.test/api/create-web-call"' in result.output
    assert 'data-agent-id="agent_x"' in result.output
    assert 'integrity="sha384-JS"' in result.output
    assert "data-chat-agent-id" not in result.output and "data-transcript" not in result.output
    redis.hset("widget:limits:https://a.com", "transcript", "1")
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test/"])
    assert "data-transcript" in result.output
    redis.delete("widget:limits:https://a.com")
    # A chat agent granted too: the snippet offers "Type instead".
    runner.invoke(args=["agents", "grant", "--chat", "https://a.com", "agent_chat_1"])
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test/"])
    assert 'data-chat-agent-id="agent_chat_1"' in result.output
    runner.invoke(args=["agents", "grant", "--chat", "https://a.com", "agent_chat_2"])
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test/"])
    assert result.exit_code != 0 and "--chat-agent" in result.output
    result = runner.invoke(
        args=["snippet", "https://a.com", "--base-url", "https://cdn.test/",
              "--chat-agent", "agent_chat_2"]
    )  # fmt: skip
    assert result.exit_code == 0 and 'data-chat-agent-id="agent_chat_2"' in result.output


def test_snippet_needs_a_choice_when_several_agents(runner, redis):
    runner.invoke(args=["agents", "grant", "https://a.com", "agent_x", "agent_y"])
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test"])
    assert result.exit_code != 0 and "--agent" in result.output


LIST_COLUMNS = [
    "entry", "agents", "per_day", "minutes_per_day", "minutes_per_month", "max_concurrent",
    "minutes_today", "minutes_month", "live", "chat_agents", "chats_per_day",
]  # fmt: skip


def listed(runner) -> dict[str, dict]:
    result = runner.invoke(args=["origins", "list"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0].split("\t") == LIST_COLUMNS
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    return {row[0]: dict(zip(LIST_COLUMNS, row, strict=True)) for row in rows}


def test_origins_list_shows_budgets_in_effect_minutes_used_and_live_calls(
    make_app, redis, round_trips
):
    runner = make_app(MINUTES_PER_ORIGIN_DAY=30, CONCURRENT_CALLS_PER_ORIGIN=2).test_cli_runner()
    for origin in ("https://a.com", "https://b.com", "https://c.com"):
        runner.invoke(args=["agents", "grant", origin, "agent_x"])
    redis.hset(
        "widget:limits:https://a.com",
        mapping={"per_day": "50", "minutes_per_day": "-1", "minutes_per_month": "600"},
    )
    redis.hset("widget:limits:https://b.com", mapping={"per_day": "0", "max_concurrent": "-1"})
    redis.hset("widget:limits:https://c.com", "minutes_per_day", "not a number")
    now = dt.datetime.now(dt.UTC)
    day, month = now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")
    redis.set(f"widget:minutes:origin:https://a.com:{day}", 90_000)  # 1.5 minutes
    redis.set(f"widget:minutes:origin:https://a.com:{month}", 12 * 60_000 + 3_000)
    redis.set("widget:minutes:origin:https://a.com:2000-01-01", 999_000_000)  # another day
    now_ms = int(time.time() * 1000)
    redis.zadd(
        "widget:live:origin:https://a.com",
        {"call_1": now_ms + 60_000, "pending:abc": now_ms + 5_000, "call_old": now_ms - 1},
    )
    redis.zadd("widget:live:all", {"call_1": now_ms + 60_000, "call_9": now_ms + 60_000})

    with round_trips() as count:
        rows = listed(runner)
    assert count() == 2  # the allowlist, then one pipeline for every entry
    a, b, c = rows["https://a.com"], rows["https://b.com"], rows["https://c.com"]
    assert a["agents"] == "agent_x"
    # a: stored overrides (-1 is none), the default for what is not stored
    assert [a[k] for k in LIST_COLUMNS[2:6]] == ["50", "-", "600", "2"]
    assert (a["minutes_today"], a["minutes_month"], a["live"]) == ("1.5", "12.1", "2")
    # b: 0 pauses, -1 lifts the default cap; no default month budget
    assert [b[k] for k in LIST_COLUMNS[2:6]] == ["0", "30", "-", "-"]
    assert (b["minutes_today"], b["minutes_month"], b["live"]) == ("0.0", "0.0", "0")
    # c: what is not a number is ignored, as admission does
    assert [c[k] for k in LIST_COLUMNS[2:6]] == ["1000", "30", "-", "2"]


def test_origins_list_without_budgets_and_with_a_wrong_key_type(runner, redis):
    runner.invoke(args=["agents", "grant", "https://a.com", "agent_x"])
    redis.sadd("widget:limits:https://a.com", "per_day")  # a set, not a hash
    row = listed(runner)["https://a.com"]
    assert [row[k] for k in LIST_COLUMNS[2:]] == ["?", "?", "?", "?", "0.0", "0.0", "0", "-", "?"]
    redis.delete("widget:limits:https://a.com")
    row = listed(runner)["https://a.com"]
    assert [row[k] for k in LIST_COLUMNS[2:6]] == ["1000", "-", "-", "-"]


def test_limits_set_show_and_unset(runner, redis):
    result = runner.invoke(
        args=["limits", "set", "HTTPS://Client-A.com", "minutes_per_month=600",
              "max_concurrent=3", "verify=pow", "per_day=-1", "transcript=1"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert redis.hgetall("widget:limits:https://client-a.com") == {
        "minutes_per_month": "600", "max_concurrent": "3", "verify": "pow", "per_day": "-1",
        "transcript": "1",
    }  # fmt: skip
    assert (
        "minutes_per_month\t600"
        in runner.invoke(args=["limits", "show", "https://client-a.com"]).output
    )
    runner.invoke(
        args=["limits", "unset", "https://client-a.com", "verify", "per_day", "transcript"]
    )
    assert set(redis.hkeys("widget:limits:https://client-a.com")) == {
        "minutes_per_month", "max_concurrent",
    }  # fmt: skip
    agent = runner.invoke(args=["limits", "set", "--agent", "agent_abc", "minutes_per_day=90"])
    assert (
        agent.exit_code == 0
        and redis.hget("widget:limits:agent:agent_abc", "minutes_per_day") == "90"
    )


@pytest.mark.parametrize(
    "setting",
    [
        "minutes_per_month=lots",
        "per_day=-2",
        "verify=maybe",
        "typo=1",
        "max_concurrent",
        "transcript=yes",
    ],  # fmt: skip
)
def test_limits_set_refuses_what_would_silently_mean_the_default(runner, redis, setting):
    result = runner.invoke(args=["limits", "set", "https://client-a.com", setting])
    assert result.exit_code != 0
    assert redis.exists("widget:limits:https://client-a.com") == 0


def test_limits_set_warns_about_an_unconfigured_check(runner, redis):
    result = runner.invoke(args=["limits", "set", "https://client-a.com", "verify=turnstile"])
    assert result.exit_code == 0 and "not configured" in result.output
