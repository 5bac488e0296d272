"""The npm package's ES module in a site's own bundle (built here with esbuild, from the
packed package): the widget works with no CDN files, its parts split into lazy chunks."""

from __future__ import annotations

import threading
from functools import partial
from http.server import ThreadingHTTPServer

import pytest

from tests.package.pack import SAMPLES, esbuild, pack
from tests.widget.conftest import WidgetFiles
from tests.widget.pages import SHADOW, STATE, events, go_live, text

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's files on their own origin (http://127.0.0.1:<port>)."""
    root = tmp_path_factory.mktemp("site")
    pack(root)
    (root / "app.js").write_text((SAMPLES / "app.js").read_text())
    esbuild(root / "app.js", root / "out", root, minify="true")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(WidgetFiles, directory=str(root / "out"))
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", root / "out"
    server.shutdown()
    server.server_close()


def site_page(page_server, origin):
    return page_server.add(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"></head>
<body><h1>A bundled site</h1><script type="module" src="{origin}/app.js"></script></body></html>"""
    )


def test_bundled_widget_calls_without_the_cdn(
    page, page_server, site, token_gateway, widget_origin
):
    origin, out = site
    chunks = sorted(p.name for p in out.glob("*.js"))
    assert len(chunks) > 5, chunks  # the parts stayed separate chunks in the site's build
    page.goto(f"{site_page(page_server, origin)}?endpoint={token_gateway.endpoint}")
    page.wait_for_function(f"{STATE} === 'idle'")
    page.locator("retell-widget .launch").wait_for(state="visible")
    # Styled by constructed stylesheets: no <link>, no file fetched for CSS.
    assert page.evaluate(f"{SHADOW}.adoptedStyleSheets.length") == 1
    assert page.evaluate(f"{SHADOW}.querySelectorAll('link, style').length") == 0
    color = page.evaluate(f"getComputedStyle({SHADOW}.querySelector('.launch')).backgroundColor")
    assert color == "rgb(21, 128, 61)"  # the green theme
    loaded = [u for u in page.requested if u.startswith(origin)]
    assert loaded and all(u.endswith(".js") for u in loaded)
    before = len(loaded)

    go_live(page)
    assert events(page, "call-start")[0]["callId"] == page.title()
    assert text(page, "msg") == "Connected"
    lazy = [u for u in page.requested if u.startswith(origin)][before:]
    assert lazy, "the call engine came as its own chunk, on intent"
    assert not [u for u in page.requested if u.startswith(widget_origin)], "no CDN file"
    page.locator("retell-widget .hang").click()
    page.wait_for_function(f"{STATE} === 'ended'")


def test_bundled_widget_speaks_the_pages_language(page, page_server, site, token_gateway):
    origin, _ = site
    page.goto(f"{site_page(page_server, origin)}?endpoint={token_gateway.endpoint}&lang=de")
    page.locator("retell-widget .launch").wait_for(state="visible")
    assert text(page, "launch") == "Mit unserem KI-Agenten sprechen"
