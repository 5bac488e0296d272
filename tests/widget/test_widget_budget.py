"""Size budgets and manifest integrity, read from the built manifest."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

DIST = Path(__file__).resolve().parents[2] / "static" / "dist"
LOADER_BUDGET = 8 * 1024  # loader JS + CSS, gzipped together
ENGINE_BUDGET = 6 * 1024  # v3 gateway engine, gzipped
VERIFY_BUDGET = 4 * 1024  # verify.js (proof-of-work solver and worker, captcha glue), gzipped
CHAT_BUDGET = 7 * 1024  # chat.js + chat.css, fetched together on the first "Type instead", gzipped
TRANSCRIPT_BUDGET = 2 * 1024  # transcript.js + transcript.css, when a call with one goes live
CONSENT_BUDGET = 2 * 1024  # consent.js + consent.css, before the first call where a site asks
FEEDBACK_BUDGET = 2 * 1024  # feedback.js + feedback.css, after a call where a site asks


def manifest():
    return json.loads((DIST / "manifest.json").read_text())


def test_size_budgets():
    files = manifest()["files"]
    loader = files["v1/retell-widget.js"]["gzip"] + files["v1/retell-widget.css"]["gzip"]
    assert loader <= LOADER_BUDGET, f"loader JS+CSS is {loader} B gzipped"
    assert files["v1/engine-gateway.js"]["gzip"] <= ENGINE_BUDGET
    assert files["v1/verify.js"]["gzip"] <= VERIFY_BUDGET
    chat = files["v1/chat.js"]["gzip"] + files["v1/chat.css"]["gzip"]
    assert chat <= CHAT_BUDGET, f"chat JS+CSS is {chat} B gzipped"
    transcript = files["v1/transcript.js"]["gzip"] + files["v1/transcript.css"]["gzip"]
    assert transcript <= TRANSCRIPT_BUDGET, f"transcript JS+CSS is {transcript} B gzipped"
    for part, budget in (("consent", CONSENT_BUDGET), ("feedback", FEEDBACK_BUDGET)):
        size = files[f"v1/{part}.js"]["gzip"] + files[f"v1/{part}.css"]["gzip"]
        assert size <= budget, f"{part} JS+CSS is {size} B gzipped"


def test_manifest_matches_files():
    data = manifest()
    assert data["version"] == json.loads((DIST.parent / "package.json").read_text())["version"]
    assert set(data["files"]) == {
        "v1/retell-widget.js",
        "v1/retell-widget.css",
        "v1/engine-gateway.js",
        "v1/engine-livekit.js",
        "v1/verify.js",
        "v1/chat.js",
        "v1/chat.css",
        "v1/transcript.js",
        "v1/transcript.css",
        "v1/consent.js",
        "v1/consent.css",
        "v1/feedback.js",
        "v1/feedback.css",
        "v1/i18n-es.js",
        "v1/i18n-fr.js",
        "v1/i18n-de.js",
    }
    for name, entry in data["files"].items():
        raw = (DIST / name).read_bytes()
        assert entry["bytes"] == len(raw)
        digest = base64.b64encode(hashlib.sha384(raw).digest()).decode()
        assert entry["integrity"] == f"sha384-{digest}"
        assert 0 < entry["gzip"] < entry["bytes"]
        assert b"dequeuniversity" not in raw  # axe-core (its rule help URLs) is never shipped
