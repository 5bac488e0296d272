"""The React and Vue sample apps (static/samples), built once per session against the package
as npm installs it (`npm pack` of static/, unpacked), and the pages that host them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.package.pack import NODE_MODULES, STATIC, pack

SAMPLES = STATIC / "samples"
# Which copies an app imports as react/react-dom/vue (static/package.json devDependencies).
PEERS = {
    "react19": {"react": "react", "react-dom": "react-dom"},
    "react18": {"react": "react18", "react-dom": "react-dom18"},
    "vue": {"vue": "vue"},
}

# Every <retell-widget> element the page ever made, kept (with its widget: host.widget).
HOSTS = """
(() => {
  const make = Document.prototype.createElement;
  const hosts = [];
  Object.defineProperty(window, '__hosts', { value: hosts });
  Document.prototype.createElement = function (name, ...rest) {
    const el = make.call(this, name, ...rest);
    if (String(name).toLowerCase() === 'retell-widget') hosts.push(el);
    return el;
  };
})();
"""
MIC_LIVE = "window.__probe.streams.some(s => s.getTracks().some(t => t.readyState === 'live'))"
COUNT = "document.querySelectorAll('retell-widget').length"

_built: dict[str, Path] = {}


def built(tmp_path_factory) -> Path:
    """The root holding node_modules/retell-widget and out/<app>/main.js (once a session)."""
    if "root" not in _built:
        root = tmp_path_factory.mktemp("frameworks")
        pack(root)
        subprocess.run(
            ["node", str(SAMPLES / "build.mjs"), str(root)],
            check=True, timeout=120, capture_output=True, text=True,
        )  # fmt: skip
        _built["root"] = root
    return _built["root"]


def sandbox(root: Path, app: str) -> Path:
    """A directory whose node_modules has the package and `app`'s copies of its peers."""
    box = root / f"node-{app}"
    modules = box / "node_modules"
    if not modules.exists():
        modules.mkdir(parents=True)
        # A copy, not a link: its imports must resolve from here.
        shutil.copytree(root / "node_modules" / "retell-widget", modules / "retell-widget")
        for name, real in PEERS[app].items():
            (modules / name).symlink_to(NODE_MODULES / real)
    return box


def node(root: Path, app: str, script: str) -> dict:
    """Runs an ES module script under Node in `app`'s sandbox; returns its JSON output."""
    # React 18's copies are aliases (react18, react-dom18): resolving from the links, not from
    # static/node_modules, is what makes react-dom 18 find react 18 rather than the root's 19.
    preserve = ["--preserve-symlinks"] if app == "react18" else []
    run = subprocess.run(
        ["node", *preserve, "--input-type=module", "-e", script],
        cwd=sandbox(root, app), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def open_app(page, page_server, root: Path, app: str, view: str, endpoint: str, strict=False):
    """Hosts out/<app> on the page's origin and opens the sample's `view` there."""
    out = root / "out" / app

    def serve(route):
        name = route.request.url.split(f"/app/{app}/", 1)[1].split("?")[0]
        path = (out / name).resolve()
        if out not in path.parents or not path.is_file():
            return route.fulfill(status=404)
        return route.fulfill(path=str(path), content_type="text/javascript")

    page.add_init_script(HOSTS)
    page.route(f"{page_server.origin}/app/{app}/**", serve)
    data = {"proxy-endpoint": endpoint, "agent-id": "agent_a", "view": view}
    attrs = " ".join(f'data-{k}="{v}"' for k, v in data.items())
    attrs += " data-strict" if strict else ""
    url = page_server.add(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{app}</title></head>
<body><div id="root" {attrs}></div>
<script type="module" src="/app/{app}/main.js"></script></body></html>"""
    )
    page.goto(url)
    page.wait_for_function("document.getElementById('root').childElementCount > 0")
    return page
