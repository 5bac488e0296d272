"""`make run`: the whole stack on loopback, in the foreground, stopped by Ctrl-C.

    Redis          REDIS_SENTINELS or REDIS_URL (REDIS_CLUSTER=1: a cluster node) if set,
                   passed through as they are; else redis-server on a free port in a temp
                   dir; else fakeredis's TCP server (said which at start-up)
    fake Retell    devtools.fakes.retell + devtools.fakes.gateway + devtools.fakes.monitor
                   (live transcripts), only when RETELL_API_KEY is unset (announced in
                   one line); the gateway reports each call's start
                   and end to the fake API, which sends signed webhooks to
                   /api/retell-webhook through nginx, as Retell would
    gunicorn       deploy/gunicorn.conf.py, APP_ENV=production, production limits,
                   TRUSTED_PROXY_COUNT=1 behind nginx
    nginx          deploy/nginx rendered for loopback: widget files + /api/ on --port
    demo site      a second origin on --demo-port with the widget embedded; its origin
                   and a demo agent are allowlisted before the URLs are printed

honcho supervises the processes: if one dies, the rest are stopped; Ctrl-C
(SIGINT) or SIGTERM stops them all, each in its own process group.

Ports: --port / RUN_PORT (8000), --demo-port / RUN_DEMO_PORT (8001); the internal
services take free ports.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from devtools.ports import free_port, port_is_free, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEFAULT_DEMO_AGENT = "agent_demo"
DEFAULT_DEMO_CHAT_AGENT = "agent_chat_demo"  # the fake's chat agents echo any id
FAKE_API_KEY = "key_local_fake_retell"


def _python() -> str:
    return sys.executable


def _gunicorn() -> str:
    candidate = Path(sys.executable).with_name("gunicorn")
    return str(candidate) if candidate.exists() else "gunicorn"


def _cmd(*parts: object) -> str:
    # honcho runs commands through a shell; exec so signals reach the program itself.
    return "exec " + " ".join(shlex.quote(str(p)) for p in parts)


def render_demo(
    out_dir: Path, *, widget_base: str, api_url: str, agent_id: str, chat_agent_id: str = ""
) -> Path:
    """Fill the demo page's placeholders; returns the directory to serve."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = (DEMO_DIR / "index.html").read_text()
    for key, value in {
        "{{WIDGET_BASE}}": widget_base,
        "{{API_URL}}": api_url,
        "{{AGENT_ID}}": agent_id,
        "{{CHAT_AGENT_ID}}": chat_agent_id,
    }.items():
        page = page.replace(key, value)
    (out_dir / "index.html").write_text(page)
    return out_dir


def plan(args, environ: dict, workdir: Path) -> tuple[list[tuple[str, str]], dict, list[str]]:
    """Work out processes, the app's environment and the lines to announce."""
    from deploy.nginx.render import nginx_command, write_local

    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(environ)
    env["PYTHONUNBUFFERED"] = "1"
    processes: list[tuple[str, str]] = []
    notes: list[str] = []

    # Redis
    if environ.get("REDIS_SENTINELS"):
        master = environ.get("REDIS_SENTINEL_MASTER", "mymaster")
        notes.append(f"Redis: asking REDIS_SENTINELS ({environ['REDIS_SENTINELS']}) for {master}")
    elif environ.get("REDIS_URL"):
        cluster = " (a cluster node)" if environ.get("REDIS_CLUSTER", "0") not in ("", "0") else ""
        notes.append(f"Redis: using REDIS_URL from the environment{cluster} ({_url(environ)})")
    elif environ.get("REDIS_CLUSTER", "0") not in ("", "0"):
        raise SystemExit("REDIS_CLUSTER=1 needs REDIS_URL: any node of your cluster")
    else:
        redis_port = free_port()
        redis_server = shutil.which("redis-server")
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        if redis_server:
            redis_dir = workdir / "redis"
            redis_dir.mkdir()
            processes.append(
                (
                    "redis",
                    _cmd(
                        redis_server,
                        "--port",
                        redis_port,
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        redis_dir,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--loglevel",
                        "warning",
                    ),
                )
            )
            notes.append(f"Redis: started redis-server on 127.0.0.1:{redis_port} ({redis_dir})")
        else:
            processes.append(
                ("redis", _cmd(_python(), "-m", "devtools.run_local", "fakeredis", redis_port))
            )
            notes.append(
                f"Redis: redis-server is not installed; using fakeredis's TCP server "
                f"on 127.0.0.1:{redis_port} (in memory, single process)"
            )

    # Retell
    if environ.get("RETELL_API_KEY"):
        notes.append(
            f"Retell: using RETELL_API_KEY against {env.get('RETELL_API_BASE', 'api.retellai.com')}"
        )
        if args.agent_id == DEFAULT_DEMO_AGENT:
            notes.append("set DEMO_AGENT_ID (or --agent-id) to one of your agents for the demo")
        if args.chat_agent_id == DEFAULT_DEMO_CHAT_AGENT:
            notes.append("set DEMO_CHAT_AGENT_ID to one of your chat agents for the demo's chat")
    else:
        retell_port, gateway_port, monitor_port = free_port(), free_port(), free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        retell_url = f"http://127.0.0.1:{retell_port}"
        # Through nginx, as a real deployment receives them.
        webhook_url = f"http://localhost:{args.port}/api/retell-webhook"
        processes.append(
            (
                "retell",
                _cmd(
                    _python(),
                    "-m",
                    "devtools.fakes.retell",
                    "--port",
                    retell_port,
                    "--api-key",
                    FAKE_API_KEY,
                    "--webhook-url",
                    webhook_url,
                ),
            )
        )
        processes.append(
            (
                "gateway",
                _cmd(
                    _python(),
                    "-m",
                    "devtools.fakes.gateway",
                    "--port",
                    gateway_port,
                    "--retell-url",
                    retell_url,
                ),
            )
        )
        # Live transcripts: the fake monitor socket plays a short demo call on connect.
        processes.append(
            (
                "monitor",
                _cmd(
                    _python(),
                    "-m",
                    "devtools.fakes.monitor",
                    "--port",
                    monitor_port,
                    "--api-key",
                    FAKE_API_KEY,
                    "--demo",
                ),
            )
        )
        env.update(
            RETELL_API_KEY=FAKE_API_KEY,
            RETELL_API_BASE=retell_url,
            RETELL_GATEWAY_BASE=gateway_url,
            RETELL_API_VERSION="v3",
            RETELL_MONITOR_BASE=f"ws://127.0.0.1:{monitor_port}",
        )
        notes.append(
            f"RETELL_API_KEY is not set: using the FAKE Retell API on 127.0.0.1:{retell_port} "
            f"and a fake WebRTC gateway on {gateway_url} (no real calls are made)"
        )
        notes.append(f"fake Retell monitor socket (live transcripts) on 127.0.0.1:{monitor_port}")
        notes.append(
            f"fake Retell sends signed webhooks to {webhook_url} when a call ends "
            "(call_started, call_ended, call_analyzed)"
        )

    # The app, configured as in production except that http:// demo origins are allowed.
    app_port = free_port()
    env.setdefault("APP_ENV", "production")
    env.setdefault("ALLOW_INSECURE_ORIGINS", "1")
    env.setdefault("TRUSTED_PROXY_COUNT", "1")
    env.setdefault("USAGE_IP_HASH_KEY", secrets.token_hex(32))
    env.setdefault("POW_HMAC_KEY", secrets.token_hex(32))  # so a demo site can ask for pow
    env.setdefault("TOKEN_SIGNING_KEY", secrets.token_hex(32))  # one key for every worker
    env.setdefault("USAGE_SPOOL_DIR", str(workdir / "spool"))  # records Redis could not take
    env.setdefault("WIDGET_MANIFEST", str(args.dist_root / "manifest.json"))
    env["GUNICORN_BIND"] = f"127.0.0.1:{app_port}"
    env.setdefault("GUNICORN_WORKERS", "2")
    processes.append(
        (
            "web",
            _cmd(_gunicorn(), "-c", ROOT / "deploy" / "gunicorn.conf.py", "wsgi:app"),
        )
    )

    # nginx: the widget's origin (files + API) and, as a second server, the demo site.
    public = f"http://localhost:{args.port}"
    demo = f"http://localhost:{args.demo_port}"
    demo_root = render_demo(
        workdir / "demo",
        widget_base=f"{public}/v1",
        api_url=f"{public}/api/create-web-call",
        agent_id=args.agent_id,
        chat_agent_id=args.chat_agent_id,
    )
    nginx_prefix = workdir / "nginx"
    conf = write_local(
        nginx_prefix,
        port=args.port,
        upstream=f"127.0.0.1:{app_port}",
        dist_root=str(args.dist_root),
        demo_port=args.demo_port,
        demo_root=str(demo_root),
    )
    processes.append(("nginx", _cmd(*nginx_command(nginx_prefix, conf))))

    # Seeds the allowlist once Redis answers, waits for health, prints the URLs.
    processes.append(
        (
            "ready",
            _cmd(
                _python(),
                "-m",
                "devtools.run_local",
                "ready",
                "--public",
                public,
                "--demo",
                demo,
                "--agent-id",
                args.agent_id,
                "--chat-agent-id",
                args.chat_agent_id,
            ),
        )
    )
    env["RUN_LOCAL_DEMO_ORIGINS"] = f"{demo} http://127.0.0.1:{args.demo_port}"
    return processes, env, notes


def _url(environ) -> str:
    """REDIS_URL without its password, for the console."""
    from urllib.parse import urlsplit

    parts = urlsplit(environ["REDIS_URL"])
    if not parts.password:
        return environ["REDIS_URL"]
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


# What the admin CLI needs to reach the same Redis (printed, so never a password).
REDIS_CHOICE = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_CLUSTER",
                "REDIS_KEY_PREFIX")  # fmt: skip


def run_stack(args) -> int:
    from honcho.manager import Manager

    for port in (args.port, args.demo_port):
        if not port_is_free(port):
            print(f"port {port} is in use; pick another with --port/--demo-port", file=sys.stderr)
            return 2
    if not (args.dist_root / "v1").is_dir():
        print(f"warning: {args.dist_root}/v1 is missing; run `make build`", file=sys.stderr)

    workdir = Path(tempfile.mkdtemp(prefix="widget-run-"))
    try:
        processes, env, notes = plan(args, dict(os.environ), workdir)
        for line in notes:
            print(f"==> {line}", flush=True)
        manager = Manager()
        for name, cmd in processes:
            manager.add_process(name, cmd, env=env, cwd=str(ROOT))
        # A closed terminal must stop the stack too, not orphan it (children run in
        # their own sessions and never see the hangup themselves).
        signal.signal(signal.SIGHUP, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        manager.loop()
        # A Ctrl-C or SIGTERM that stopped everything is a clean exit.
        return 0 if manager.returncode in (0, 130, 143, -2, -15) else manager.returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def ready(args) -> int:
    """Allowlist the demo origins, wait until the API answers, print where to go."""
    import redis

    from app.redis_clients import make_redis_client
    from config import ConfigError, load_settings

    try:
        settings = load_settings()  # the app's own Redis settings: node, Sentinel or Cluster
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 1
    settings_prefix = settings.redis_key_prefix
    client = make_redis_client(settings)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                print("Redis did not come up", file=sys.stderr)
                return 1
            time.sleep(0.1)
    origins = os.environ.get("RUN_LOCAL_DEMO_ORIGINS", args.demo).split()
    for origin in origins:
        client.sadd(f"{settings_prefix}origins", origin)
        client.sadd(f"{settings_prefix}agents:{origin}", args.agent_id)
        client.sadd(f"{settings_prefix}chat-agents:{origin}", args.chat_agent_id)
        client.hset(f"{settings_prefix}limits:{origin}", "transcript", "1")
    redis_env = " ".join(
        f"{name}={shlex.quote(_url(os.environ) if name == 'REDIS_URL' else os.environ[name])}"
        for name in REDIS_CHOICE
        if os.environ.get(name)
    )
    wait_for_http(f"{args.public}/api/health/ready", timeout=60)
    wait_for_http(f"{args.demo}/", timeout=10)
    print(
        "\n"
        f"  Demo client site : {args.demo}/   (widget embedded; origin allowlisted)\n"
        f"  Widget files     : {args.public}/v1/retell-widget.js\n"
        f"  API              : {args.public}/api/create-web-call\n"
        f"  Health           : {args.public}/api/health/ready\n"
        f"  Demo agent       : {args.agent_id} (voice), {args.chat_agent_id} (chat)\n"
        f"  Admin CLI        : {redis_env} .venv/bin/flask --app wsgi origins list\n"
        "  Press Ctrl-C to stop everything.\n",
        flush=True,
    )
    # Stay up: honcho stops the whole stack when any process exits.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


def fakeredis_server(port: int) -> int:
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fakeredis"]:
        return fakeredis_server(int(argv[1]))
    if argv[:1] == ["ready"]:
        parser = argparse.ArgumentParser(prog="run_local ready")
        parser.add_argument("--public", required=True)
        parser.add_argument("--demo", required=True)
        parser.add_argument("--agent-id", required=True)
        parser.add_argument("--chat-agent-id", required=True)
        try:
            return ready(parser.parse_args(argv[1:]))
        except KeyboardInterrupt:
            return 0

    parser = argparse.ArgumentParser(description="Run the whole stack locally (make run).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RUN_PORT", 8000)))
    parser.add_argument("--demo-port", type=int, default=int(os.environ.get("RUN_DEMO_PORT", 8001)))
    parser.add_argument("--agent-id", default=os.environ.get("DEMO_AGENT_ID", DEFAULT_DEMO_AGENT))
    parser.add_argument(
        "--chat-agent-id",
        default=os.environ.get("DEMO_CHAT_AGENT_ID", DEFAULT_DEMO_CHAT_AGENT),
    )
    parser.add_argument(
        "--dist-root", type=Path, default=Path(os.environ.get("WIDGET_DIST", ROOT / "static/dist"))
    )
    args = parser.parse_args(argv)
    args.dist_root = args.dist_root.resolve()
    return run_stack(args)


if __name__ == "__main__":
    sys.exit(main())
