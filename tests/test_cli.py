"""The operator CLI (flask --app wsgi ...) against a real redis-server."""

import json

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
    assert (
        '<link rel="stylesheet" href="https://cdn.test/v1/retell-widget.css" '
        'integrity="sha384-CSS" crossorigin="anonymous">' in result.output
    )
    assert 'data-proxy-endpoint="https://cdn.test/api/create-web-call"' in result.output
    assert 'data-agent-id="agent_x"' in result.output
    assert 'integrity="sha384-JS"' in result.output


def test_snippet_needs_a_choice_when_several_agents(runner, redis):
    runner.invoke(args=["agents", "grant", "https://a.com", "agent_x", "agent_y"])
    result = runner.invoke(args=["snippet", "https://a.com", "--base-url", "https://cdn.test"])
    assert result.exit_code != 0 and "--agent" in result.output
