"""admission.lua's contract, run directly against a real redis-server: one test per outcome.

The script is driven through Admission.decide (one JSON request, one JSON reply), so the
Lua can change without going through HTTP.
"""

import datetime as dt
import json

import pytest

from app.policy import admission
from app.policy.admission import REFUSALS, Admission, AdmissionRequest
from app.usage.entry import FIELDS, UsageEntry
from config import load_settings
from tests.helpers import AGENT, ORIGIN

ENTRY = UsageEntry.start(origin=ORIGIN, ip="ip-hash", user_agent="ua", request_id="req-1")


@pytest.fixture
def gate(redis, redis_server):
    def make(**env):
        settings = load_settings({}, {"REDIS_URL": redis_server.url, **env})
        return Admission(redis, settings)

    return make


def decide(gate, **fields):
    request = {"mode": "create", "origin": ORIGIN, "ip_bucket": "203.0.113.9", "usage": ENTRY}
    return gate.decide(AdmissionRequest(**{**request, **fields}))


def stream(redis):
    return [fields for _, fields in redis.xrange("widget:usage")]


def test_the_script_speaks_json_with_named_fields(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    script = gate().script
    payload = {
        **gate().fixed,
        "mode": "create",
        "candidates": [ORIGIN],
        "implicit": False,
        "agent_id": AGENT,
        "ip_bucket": "198.51.100.1",
        "usage": ENTRY.fields(),
    }
    reply = json.loads(script(keys=[], args=[json.dumps(payload)]))
    assert reply["outcome"] == "admitted"
    assert {"entry", "agent_id", "limit", "remaining", "reset", "retry_after"} <= set(reply)
    assert (reply["entry"], reply["agent_id"]) == (ORIGIN, AGENT)


def test_admitted_counts_every_limit_and_records_nothing(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    decision = decide(gate(RATE_LIMIT_PER_IP="3 per minute"), agent_id=AGENT)
    assert decision.outcome == admission.ADMITTED
    assert (decision.entry, decision.agent_id) == (ORIGIN, AGENT)
    assert (decision.limit, decision.remaining) == (3, 2)
    assert decision.reset > 0 and decision.retry_after == 0
    assert stream(redis) == []  # the route records the created call after the upstream answer


def test_omitted_agent_is_the_entrys_only_grant(gate, allow_origin):
    allow_origin(ORIGIN, AGENT)
    decision = decide(gate())
    assert (decision.outcome, decision.agent_id) == (admission.ADMITTED, AGENT)


def test_origin_denied_is_recorded_with_its_code(gate, redis):
    decision = decide(gate(), agent_id=AGENT)
    assert (decision.outcome, decision.reason) == ("origin_denied", "origin_denied")
    [entry] = stream(redis)
    assert list(entry) == list(FIELDS)  # one schema: every field, in order
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "origin_denied", "403", "origin_not_allowed",
    )  # fmt: skip
    assert (entry["origin"], entry["request_id"], entry["entry"]) == (ORIGIN, "req-1", "")


def test_invalid_body_is_recorded_with_the_body_code(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    decision = decide(gate(), body_error=(415, "unsupported_media_type"))
    assert (decision.outcome, decision.reason, decision.entry) == ("invalid", "body", ORIGIN)
    [entry] = stream(redis)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "invalid", "415", "unsupported_media_type",
    )  # fmt: skip


def test_agent_required_is_an_invalid_outcome(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT, "agent_other")
    decision = decide(gate())
    assert (decision.outcome, decision.reason) == ("invalid", "agent_required")
    [entry] = stream(redis)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "invalid", "400", REFUSALS["agent_required"]["error"],
    )  # fmt: skip


@pytest.mark.parametrize("grants", [(), ("agent_other",)])
def test_agent_denied(gate, redis, allow_origin, grants):
    allow_origin(ORIGIN, *grants)
    decision = decide(gate(), agent_id=AGENT if grants else "")
    assert (decision.outcome, decision.entry) == ("agent_denied", ORIGIN)
    [entry] = stream(redis)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "agent_denied", "403", "agent_not_allowed",
    )  # fmt: skip


def test_rate_limited_spends_nothing_and_names_the_blocking_limit(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "per_day", 1)
    limited_gate = gate(RATE_LIMIT_PER_IP="5 per minute")
    assert decide(limited_gate, agent_id=AGENT).outcome == "admitted"
    decision = decide(limited_gate, agent_id=AGENT)
    assert (decision.outcome, decision.limit, decision.remaining) == ("rate_limited", 1, 0)
    assert 0 < decision.retry_after <= 86400
    assert redis.zcard("widget:rl:ip:203.0.113.9:60") == 1  # the refusal took no IP budget
    [entry] = stream(redis)
    assert (entry["outcome"], entry["status"], entry["error"]) == (
        "rate_limited", "429", "rate_limited",
    )  # fmt: skip


@pytest.mark.parametrize(("allowed", "outcome"), [(True, "admitted"), (False, "origin_denied")])
def test_preflight_checks_the_origin_only_and_records_nothing(
    gate, redis, allow_origin, allowed, outcome
):
    if allowed:
        allow_origin(ORIGIN)
    decision = gate().decide(AdmissionRequest(mode="preflight", origin=ORIGIN))
    assert decision.outcome == outcome
    assert stream(redis) == []


def test_implicit_loopback_origin_needs_no_entry(gate, redis):
    origin = "http://localhost:5173"
    decision = decide(gate(), origin=origin, implicit=True, agent_id=AGENT)
    # Allowed as an origin, but with no grants it still has no agent.
    assert (decision.outcome, decision.entry) == ("agent_denied", origin)


def test_the_scripts_calendar_matches_pythons(redis):
    """admission.lua names budget periods by UTC date: its date math, checked day by day."""
    script = admission.SCRIPT
    functions = script[script.index("local function civil") : script.index("local year, month")]
    harness = (
        functions
        + """
local out = {}
for _, day in ipairs(cjson.decode(ARGV[1])) do
  local y, m, d = civil(day)
  local next_month = m == 12 and days_from_civil(y + 1, 1, 1) or days_from_civil(y, m + 1, 1)
  out[#out + 1] = {y, m, d, next_month}
end
return cjson.encode(out)
"""
    )
    epoch = dt.date(1970, 1, 1)
    days = [(dt.date(2024, 1, 1) - epoch).days + n for n in range(0, 3 * 366, 1)]
    days += [(dt.date(y, 3, 1) - epoch).days - 1 for y in (2000, 2100, 2400)]  # Feb's end
    reply = json.loads(redis.eval(harness, 0, json.dumps(days)))
    for day, (y, m, d, next_month) in zip(days, reply, strict=True):
        date = epoch + dt.timedelta(days=day)
        assert (y, m, d) == (date.year, date.month, date.day)
        first = dt.date(y + (m == 12), m % 12 + 1, 1)
        assert next_month == (first - epoch).days


def test_a_month_budget_waits_for_the_first_of_next_month(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    redis.hset(f"widget:limits:{ORIGIN}", "minutes_per_month", 0)
    decision = decide(gate(), agent_id=AGENT)
    assert (decision.outcome, decision.reason) == ("budget_exhausted", "budget_exhausted")
    now = dt.datetime.now(dt.UTC)
    first = dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=dt.UTC)
    assert abs(decision.retry_after - (first - now).total_seconds()) <= 2


# -- kind "chat": the same script, the chat grants and the chat limits -----------------------
CHAT_ENTRY = UsageEntry.start(origin=ORIGIN, ip="ip", user_agent="ua", request_id="r", kind="chat")


def test_chat_reads_the_chat_grants_and_counts_on_its_own_keys(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)  # a voice grant only
    chat_gate = gate(RATE_LIMIT_CHATS_PER_IP="3 per minute", RATE_LIMIT_CHATS_PER_AGENT_DAY=9)
    decision = decide(chat_gate, kind="chat", usage=CHAT_ENTRY)
    assert decision.outcome == "agent_denied"
    [entry] = stream(redis)
    assert (entry["kind"], entry["outcome"], entry["error"]) == (
        "chat", "agent_denied", "agent_not_allowed",
    )  # fmt: skip
    redis.sadd(f"widget:chat-agents:{ORIGIN}", "agent_chat")
    decision = decide(chat_gate, kind="chat", usage=CHAT_ENTRY)
    assert (decision.outcome, decision.agent_id) == ("admitted", "agent_chat")
    assert (decision.limit, decision.remaining) == (3, 2)
    assert decision.transcript is False and decision.counters == decision.live == ()
    keys = set(redis.keys("widget:rl:*"))
    day = int(dt.datetime.now(dt.UTC).timestamp() // 86400)
    assert keys == {
        "widget:rl:chat:ip:203.0.113.9:60",
        f"widget:rl:chat:origin:{ORIGIN}:day:{day}",
        f"widget:rl:chat:agent:agent_chat:day:{day}",
    }


def test_chats_per_day_overrides_only_chats(gate, redis, allow_origin):
    allow_origin(ORIGIN, AGENT)
    redis.sadd(f"widget:chat-agents:{ORIGIN}", "agent_chat")
    redis.hset(f"widget:limits:{ORIGIN}", mapping={"chats_per_day": 1, "per_day": 5})
    g = gate(RATE_LIMIT_CHATS_PER_IP="")
    assert decide(g, kind="chat", usage=CHAT_ENTRY).outcome == "admitted"
    limited = decide(g, kind="chat", usage=CHAT_ENTRY)
    assert (limited.outcome, limited.limit) == ("rate_limited", 1)
    assert decide(g, agent_id=AGENT).limit == 5  # calls: their own per_day


@pytest.mark.parametrize(
    ("stored", "default", "expected"),
    [(None, "0", False), (None, "1", True), ("1", "0", True), ("0", "1", False),
     ("maybe", "1", True)],
)  # fmt: skip
def test_an_admitted_call_says_whether_it_gets_the_transcript(
    gate, redis, allow_origin, stored, default, expected
):
    allow_origin(ORIGIN, AGENT)
    if stored is not None:
        redis.hset(f"widget:limits:{ORIGIN}", "transcript", stored)
    decision = decide(gate(TRANSCRIPT_DEFAULT=default), agent_id=AGENT)
    assert (decision.outcome, decision.transcript) == ("admitted", expected)
