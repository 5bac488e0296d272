"""The npm package as a user gets it: `npm pack` of static/, unpacked into a node_modules.

Tests import from there (through package.json "exports"), never from static/src, so a file
missing from "files" or a wrong export path fails them.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "static"
NODE_MODULES = STATIC / "node_modules"
SAMPLES = Path(__file__).resolve().parent


def pack(into: Path) -> Path:
    """Packs static/ and unpacks it as into/node_modules/retell-widget; returns that dir."""
    if not (STATIC / "dist" / "esm" / "index.js").exists():
        raise RuntimeError("static/dist is missing: run `make build` first")
    into.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        ["npm", "pack", "--json", "--pack-destination", str(into)],
        cwd=STATIC, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    tarball = into / json.loads(out.stdout)[0]["filename"]
    target = into / "node_modules" / "retell-widget"
    target.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():  # every entry is under package/
            member.name = member.name.removeprefix("package/")
            tar.extract(member, target, filter="data")
    return target


def esbuild(entry: Path, outdir: Path, root: Path, **flags: str) -> None:
    """Bundles `entry` as a site would (ESM, code splitting), resolving packages from
    root/node_modules first."""
    args = [
        str(NODE_MODULES / ".bin" / "esbuild"), str(entry), "--bundle", "--format=esm",
        "--splitting", f"--outdir={outdir}", "--log-level=warning",
        *(f"--{k.replace('_', '-')}={v}" for k, v in flags.items()),
    ]  # fmt: skip
    env = {"NODE_PATH": f"{root / 'node_modules'}:{NODE_MODULES}", "PATH": "/usr/bin:/bin"}
    subprocess.run(args, cwd=root, check=True, timeout=120, env=env)
