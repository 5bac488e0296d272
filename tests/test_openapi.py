"""docs/openapi.yaml describes the API as built: every route and every error code."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "docs" / "openapi.yaml").read_text()


def test_every_api_route_is_documented(app):
    rules = [r.rule for r in app.url_map.iter_rules() if r.rule.startswith("/api")]
    routes = {re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule) for rule in rules}  # OpenAPI form
    documented = set(re.findall(r"^  (/api/[^:]+):$", SPEC, re.MULTILINE))
    assert routes == documented


def test_every_error_code_is_in_the_error_enum():
    source = "".join(p.read_text() for p in (ROOT / "app").rglob("*.py"))
    raised = set(re.findall(r'ApiError\(\s*\d+,\s*"(\w+)"', source))
    raised |= set(re.findall(r'^\s+\d{3}: "(\w+)",$', source, re.MULTILINE))
    raised |= set(re.findall(r'\(\d{3}, "(\w+)"', source))  # tables: UPSTREAM_ERRORS
    raised |= set(re.findall(r'"status": \d{3}, "error": "(\w+)"', source))  # REFUSALS
    raised |= {"internal_error"}
    enum = SPEC[SPEC.index("enum: [invalid_json") :].split("]", 1)[0]
    documented = set(re.findall(r"\w+", enum)) - {"enum"}
    assert raised and raised <= documented
    assert documented - raised <= {"error"}
