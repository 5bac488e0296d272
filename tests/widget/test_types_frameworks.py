"""types/react.d.ts and types/vue.d.ts, as a TypeScript user gets them from the packed package:
static/samples/types compiles under `tsc --strict`, and each of its `@ts-expect-error` lines
meets its error (with the directives taken out, every one of those lines fails)."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.package.pack import NODE_MODULES
from tests.widget.frameworks import SAMPLES, built

TSC = str(NODE_MODULES / ".bin" / "tsc")
DIRECTIVE = "// @ts-expect-error"


def tsc(cwd, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [TSC, "-p", "tsconfig.json", *flags],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_framework_types_compile_and_refuse_misuse(tmp_path_factory):
    root = built(tmp_path_factory)
    for name in ("vue", "@types"):  # what the types import, beside the package
        link = root / "node_modules" / name
        if not link.exists():
            link.symlink_to(NODE_MODULES / name)
    good, bad = root / "types-ok", root / "types-bad"
    shutil.copytree(SAMPLES / "types", good)
    shutil.copytree(SAMPLES / "types", bad)
    expected: set[tuple[str, int]] = set()  # (file, line) that must fail in `bad`
    for path in sorted(bad.glob("*.ts*")):
        if path.name.endswith(".json"):
            continue
        kept, removed = [], 0
        for line in path.read_text().splitlines():
            if line.strip().startswith(DIRECTIVE):
                removed += 1
                expected.add((path.name, len(kept) + 1))
            else:
                kept.append(line)
        path.write_text("\n".join(kept) + "\n")
        assert removed >= 3, path.name
    # Our own .d.ts files are checked too (skipLibCheck off) where they must compile.
    runs = [tsc(good), tsc(bad, "--skipLibCheck")]
    (ok, _), (failed, _) = (r.communicate(timeout=180) for r in runs)
    assert runs[0].returncode == 0, ok
    assert runs[1].returncode != 0
    errors = {(f, int(n)) for f, n in re.findall(r"^(\S+?)\((\d+),\d+\): error", failed, re.M)}
    assert expected <= errors, failed
    assert errors <= expected, failed  # and nothing else broke
