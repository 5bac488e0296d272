"""The documented production install boots: a fresh virtualenv with nothing but
`pip install -r requirements.txt` (deploy/README.md, step 2) runs gunicorn with
deploy/gunicorn.conf.py under both worker classes.

The dev venv cannot show this: pytest, requests and the fakes bring in packages
(idna, packaging, ...) that production would silently lack. The clean venv is cached
under test-artifacts/production-venv/, keyed by requirements.txt's sha256 and the
Python version, so only the first run after a change installs anything.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devtools.ports import free_port, wait_until
from tests.deploy.helpers import stop_process

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements.txt"
CACHE = ROOT / "test-artifacts" / "production-venv"
# What ships and runs in production (devtools/, bench/ and tests/ do not).
SHIPPED = [
    *sorted((ROOT / "app").rglob("*.py")),
    ROOT / "config.py",
    ROOT / "wsgi.py",
    ROOT / "deploy" / "gunicorn.conf.py",
    ROOT / "deploy" / "nginx" / "render.py",
]
FIRST_PARTY = {"app", "config", "wsgi", "deploy"}
# pip's own, present in every venv and never pinned.
VENV_SEED = {"pip", "setuptools", "wheel"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned() -> dict[str, str]:
    """requirements.txt as {canonical name: version}; every line must be an exact pin."""
    pins = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert match, f"not an exact pin: {raw!r}"
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> shipped files importing it, stdlib and first party left out."""
    found: dict[str, set[str]] = {}
    for path in SHIPPED:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".", 1)[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_package_the_shipped_code_imports_is_pinned_directly():
    """Not merely present because something else happens to depend on it today."""
    distributions = importlib.metadata.packages_distributions()
    pins = pinned()
    missing = {}
    for module, files in sorted(third_party_imports().items()):
        names = {canonical(d) for d in distributions.get(module, [])}
        assert names, f"{module} (imported by {sorted(files)}) is not installed in the dev venv"
        if not names & pins.keys():
            missing[module] = sorted(files)
    assert missing == {}, f"imported but not in requirements.txt: {missing}"


def outside_the_dev_venv() -> dict[str, str]:
    """This environment (pip's index settings included) with .venv taken out of it."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE")
    }
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if not Path(entry).resolve().is_relative_to(Path(sys.prefix).resolve())
    )
    return env


@pytest.fixture(scope="session")
def production_venv() -> Path:
    """python3 -m venv + pip install -r requirements.txt, nothing else (cached)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes() + platform.python_version().encode())
    key = digest.hexdigest()[:16]
    venv = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    # The interpreter .venv was made from, without .venv's packages.
    python = Path(sys.base_prefix) / "bin" / "python3"
    env = outside_the_dev_venv()
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent runs build it once
        if not (venv / ".complete").exists():
            for old in CACHE.iterdir():  # venvs (and locks) for earlier requirements
                if old.name not in (key, f"{key}.lock"):
                    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([python, "-m", "venv", venv], check=True, env=env, timeout=120)
            install = subprocess.run(
                [venv / "bin" / "pip", "install", "-q", "-r", REQUIREMENTS],
                capture_output=True, text=True, env=env, timeout=900,
            )  # fmt: skip
            assert install.returncode == 0, install.stdout + install.stderr
            (venv / ".complete").write_text(REQUIREMENTS.read_text())
    return venv


def test_requirements_pin_everything_a_clean_install_contains(production_venv):
    """requirements.txt is the whole lock: no transitive package floats to a new release."""
    listing = subprocess.run(
        [production_venv / "bin" / "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    installed = {
        canonical(p["name"]): p["version"]
        for p in json.loads(listing.stdout)
        if canonical(p["name"]) not in VENV_SEED
    }
    assert installed == pinned()


def test_requirements_match_the_dev_venv():
    """The versions production installs are the ones this suite runs against."""
    for name, version in pinned().items():
        assert importlib.metadata.version(name) == version, name


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_production_config_boots_from_the_clean_install(
    production_venv, redis_server, tmp_path, worker_class
):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    # Only what the systemd unit and /etc/widget-gateway/env give it: nothing from .venv.
    env = {
        "PATH": f"{production_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "APP_ENV": "production",
        "RETELL_API_KEY": "key_production_install_test",
        "REDIS_URL": redis_server.url,
        "USAGE_IP_HASH_KEY": "production-install-test-hash-key",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_WORKER_CLASS": worker_class,
    }
    gunicorn = production_venv / "bin" / "gunicorn"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [gunicorn, "-c", ROOT / "deploy" / "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def answer(path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return None

    try:
        assert wait_until(lambda: answer("/api/health") or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        assert answer("/api/health")[0] == 200, log.read_text()
        status, body = answer("/api/health/ready")
        assert (status, body["status"]) == (200, "ok"), body  # Redis reached, too
        text = log.read_text()
        assert f"Using worker: {worker_class}" in text
        assert "Traceback" not in text, text
    finally:
        stop_process(proc, timeout=30)
