"""The widget in real Chromium through the `make run` stack: the demo page on one
origin, widget files and API through nginx on another, the fake WebRTC gateway on a
third. A call must go live."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.deploy.test_run_local import run_local_stack

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "static" / "dist"
CHROMIUM = "/usr/bin/chromium"
STATE = "document.querySelector('retell-widget')?.dataset.state"

pytestmark = [pytest.mark.browser, pytest.mark.nginx]


def test_demo_site_call_goes_live_through_nginx(tmp_path, need_nginx):
    if not shutil.which(CHROMIUM):
        pytest.skip("chromium is not installed (deploy/install-system-packages.sh test)")
    if not (DIST / "v1" / "retell-widget.js").exists():
        pytest.fail("static/dist is missing: run `make build` first")
    from playwright.sync_api import sync_playwright

    with run_local_stack(tmp_path, DIST) as run, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--allow-loopback-in-peer-connection",
                "--autoplay-policy=no-user-gesture-required",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            ],
        )
        try:
            page = browser.new_page()
            requested = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"http://localhost:{run.demo_port}/")
            page.wait_for_function(f"{STATE} === 'idle'", timeout=15000)
            page.locator("retell-widget .launch").click()
            page.wait_for_function(f"{STATE} === 'live'", timeout=20000)
            widget = f"http://localhost:{run.port}/v1/"
            assert f"{widget}retell-widget.js" in requested
            assert any(u.startswith(f"{widget}engine-") for u in requested)
            assert f"http://localhost:{run.port}/api/create-web-call" in requested
        finally:
            browser.close()
