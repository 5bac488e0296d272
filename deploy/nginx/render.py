"""Render the nginx site from one template: a TLS production variant and a plain-HTTP
local variant (used by `make run` and the tests).

Production, on the server (see deploy/README.md):
    python -m deploy.nginx.render production --out-dir /etc/nginx/widget-gateway \\
        --server-name widget.example.com --dist-root /srv/widget-gateway/static/dist \\
        --ssl-certificate /etc/letsencrypt/live/widget.example.com/fullchain.pem \\
        --ssl-certificate-key /etc/letsencrypt/live/widget.example.com/privkey.pem
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import jinja2

TEMPLATE_DIR = Path(__file__).resolve().parent
NGINX_BINARY = shutil.which("nginx") or "/usr/sbin/nginx"
SNIPPETS = (
    "security-headers.conf",
    "cdn-headers.conf",
    "static.conf",
    "proxy-common.conf",
    "proxy.conf",
)
# How much longer nginx waits for a chat answer than the app does (CHAT_READ_TIMEOUT).
CHAT_MARGIN_S = 30


@dataclass(frozen=True)
class SiteSettings:
    """Everything the template needs. Defaults are the production values."""

    tls: bool = True
    server_name: str = "_"
    listen: str = "443"
    http_listen: str = "80"
    ipv6: bool = True
    ssl_certificate: str = "/etc/letsencrypt/live/example.com/fullchain.pem"
    ssl_certificate_key: str = "/etc/letsencrypt/live/example.com/privkey.pem"
    acme_root: str = "/var/www/letsencrypt"
    upstream_servers: tuple[str, ...] = ("unix:/run/widget-gateway/gunicorn.sock",)
    upstream_name: str = "widget_gateway"
    dist_root: str = "/srv/widget-gateway/static/dist"
    # The release directory that /latest/ serves.
    latest_dir: str = "v1"
    latest_max_age: int = 300
    zone_name: str = "widget_create"
    limit_rate: str = "5r/s"
    limit_burst: int = 20
    # "off": never pass a request to another upstream (see snippets/proxy.conf.j2).
    next_upstream: str = "off"
    # > gunicorn timeout (deploy/gunicorn.conf.py) > the app's upstream timeouts.
    proxy_read_timeout: int = 30
    # CHAT_READ_TIMEOUT: POST /api/chat/messages waits that long for the agent's answer.
    # The default is its maximum (300 s), so any app setting fits; nginx adds CHAT_MARGIN_S.
    chat_read_timeout: float = 300
    # Live transcripts (SSE): the app writes at least every 5 s; this long silent is dead.
    transcript_read_timeout: int = 120
    access_log: str = "/var/log/nginx/widget-gateway.access.log"
    # Who may read /metrics through nginx (allow lines; everyone else is denied). The app
    # has its own list too, METRICS_ALLOW_FROM (loopback by default).
    metrics_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    # Where the rendered files will live; the site includes its snippets from here.
    conf_dir: str = "/etc/nginx/widget-gateway"
    variant: str = "production"


def local_settings(
    *, port: int, upstream: str | tuple[str, ...], dist_root: str, conf_dir: str, **overrides
) -> SiteSettings:
    """The plain-HTTP variant on loopback, with production limits and headers; upstream is
    one gunicorn address or several."""
    base = SiteSettings(
        tls=False,
        server_name="localhost",
        listen=f"127.0.0.1:{port}",
        ipv6=False,
        upstream_servers=(upstream,) if isinstance(upstream, str) else tuple(upstream),
        dist_root=dist_root,
        access_log="/dev/stdout",
        conf_dir=conf_dir,
        variant="local",
    )
    return replace(base, **overrides)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 -- nginx config, not HTML
    )


def render_files(settings: SiteSettings) -> dict[str, str]:
    """File name -> content for the site and its snippets."""
    conf_dir = settings.conf_dir.rstrip("/")
    context = asdict(settings)
    context.update(
        security_headers_path=f"{conf_dir}/security-headers.conf",
        cdn_headers_path=f"{conf_dir}/cdn-headers.conf",
        static_include_path=f"{conf_dir}/static.conf",
        proxy_include_path=f"{conf_dir}/proxy.conf",
        proxy_common_include_path=f"{conf_dir}/proxy-common.conf",
        chat_proxy_read_timeout=math.ceil(settings.chat_read_timeout) + CHAT_MARGIN_S,
    )
    env = _environment()
    files = {"site.conf": env.get_template("site.conf.j2").render(context)}
    for name in SNIPPETS:
        files[name] = env.get_template(f"snippets/{name}.j2").render(context).rstrip() + "\n"
    return files


def write_site(settings: SiteSettings, out_dir: str | Path) -> Path:
    """Write the site and snippets into out_dir (normally == settings.conf_dir)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in render_files(settings).items():
        (out / name).write_text(content)
    return out / "site.conf"


MAIN_CONF = """\
# Standalone nginx.conf for running the site unprivileged from a temp prefix.
{user}worker_processes auto;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {site};
{demo}}}
"""

DEMO_SERVER = """
    # The demo "client site": a second origin that embeds the widget (local only).
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        server_tokens off;
        access_log off;
        root {root};
        types {{ text/html html; }}
        location / {{
            try_files $uri $uri/index.html =404;
            add_header Cache-Control "no-store";
        }}
    }}
"""


def write_local(
    prefix: str | Path, *, demo_port: int | None = None, demo_root: str | None = None, **kwargs
) -> Path:
    """Render the local variant plus a main nginx.conf under prefix; return its path.

    kwargs go to local_settings (port, upstream, dist_root, and any overrides);
    demo_port/demo_root add a second server for the demo client site.
    """
    prefix = Path(prefix).resolve()
    conf_dir = prefix / "conf"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    site = write_site(local_settings(conf_dir=str(conf_dir), **kwargs), conf_dir)
    main = conf_dir / "nginx.conf"
    demo = DEMO_SERVER.format(port=demo_port, root=demo_root) if demo_port else ""
    # Started as root, nginx would drop its workers to "nobody", who cannot read a
    # private temp dir; locally they keep the invoking user.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main.write_text(MAIN_CONF.format(prefix=prefix, site=site, demo=demo, user=user))
    return main


def nginx_command(prefix: str | Path, conf: str | Path) -> list[str]:
    """Command line for a foreground, unprivileged nginx using prefix for its files."""
    prefix = Path(prefix).resolve()
    return [NGINX_BINARY, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["production", "local"])
    parser.add_argument("--out-dir", required=True, help="where to write site.conf + snippets")
    parser.add_argument("--conf-dir", help="where the files will live (default: --out-dir)")
    parser.add_argument("--server-name", default=SiteSettings.server_name)
    parser.add_argument("--dist-root", default=SiteSettings.dist_root)
    parser.add_argument("--upstream", action="append", help="gunicorn address (repeatable)")
    parser.add_argument("--ssl-certificate", default=SiteSettings.ssl_certificate)
    parser.add_argument("--ssl-certificate-key", default=SiteSettings.ssl_certificate_key)
    parser.add_argument("--acme-root", default=SiteSettings.acme_root)
    parser.add_argument("--port", type=int, default=8080, help="local variant only")
    parser.add_argument("--limit-rate", default=SiteSettings.limit_rate)
    parser.add_argument("--limit-burst", type=int, default=SiteSettings.limit_burst)
    parser.add_argument("--access-log", default=None)
    parser.add_argument(
        "--chat-read-timeout",
        type=float,
        default=SiteSettings.chat_read_timeout,
        help="the app's CHAT_READ_TIMEOUT (default: its maximum, 300)",
    )
    parser.add_argument(
        "--next-upstream", default="off", choices=["off", "error"], help="several upstreams"
    )
    parser.add_argument(
        "--metrics-allow",
        action="append",
        help="an address or network that may read /metrics (repeatable; default: this host)",
    )
    args = parser.parse_args(argv)

    conf_dir = str(Path(args.conf_dir or args.out_dir).resolve())
    common = dict(
        dist_root=args.dist_root,
        limit_rate=args.limit_rate,
        limit_burst=args.limit_burst,
        server_name=args.server_name,
        next_upstream=args.next_upstream,
        chat_read_timeout=args.chat_read_timeout,
    )
    if args.metrics_allow:
        common["metrics_allow"] = (*SiteSettings.metrics_allow, *args.metrics_allow)
    if args.access_log:
        common["access_log"] = args.access_log
    if args.variant == "production":
        settings = SiteSettings(
            conf_dir=conf_dir,
            upstream_servers=tuple(args.upstream or SiteSettings.upstream_servers),
            ssl_certificate=args.ssl_certificate,
            ssl_certificate_key=args.ssl_certificate_key,
            acme_root=args.acme_root,
            **common,
        )
    else:
        upstream = tuple(args.upstream or ["127.0.0.1:8000"])
        settings = local_settings(port=args.port, upstream=upstream, conf_dir=conf_dir, **common)
    site = write_site(settings, args.out_dir)
    print(f"wrote {site} and {', '.join(SNIPPETS)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
