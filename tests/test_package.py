"""The npm package: what `npm pack` ships, its types (compiled with tsc and checked against
the source so they cannot drift), and an import under Node that touches nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.package.pack import NODE_MODULES, SAMPLES, STATIC, pack

SRC = STATIC / "src"
TYPES = (STATIC / "types" / "index.d.ts").read_text()


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    return pack(tmp_path_factory.mktemp("pkg"))


def test_tarball_holds_the_modules_types_and_cdn_files_only(packed):
    files = {p.relative_to(packed).as_posix() for p in packed.rglob("*") if p.is_file()}
    for needed in (
        "package.json", "types/index.d.ts", "dist/esm/index.js",
        "dist/v1/retell-widget.js", "dist/v1/retell-widget.css", "dist/v1/engine-gateway.js",
    ):  # fmt: skip
        assert needed in files
    assert not [f for f in files if f.startswith(("src/", "samples/", "node_modules/"))]
    meta = json.loads((packed / "package.json").read_text())
    for entry in meta["exports"].values():  # every export points at a shipped file
        for path in entry.values() if isinstance(entry, dict) else [entry]:
            if "*" not in path:
                assert path.removeprefix("./") in files, path
    assert not meta.get("dependencies"), "peer dependencies only"


def test_types_compile_and_refuse_misuse(packed, tmp_path):
    root = packed.parents[1]
    shutil.copy(SAMPLES / "sample.ts", root / "sample.ts")
    config = {
        "compilerOptions": {
            "strict": True, "noEmit": True, "target": "es2020", "module": "esnext",
            "moduleResolution": "bundler", "lib": ["es2020", "dom"], "skipLibCheck": False,
        },
        "files": ["sample.ts"],
    }  # fmt: skip
    (root / "tsconfig.json").write_text(json.dumps(config))
    run = subprocess.run(
        [str(NODE_MODULES / ".bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    # The same sample with one expected error made real must fail: the check can fail.
    broken = (root / "sample.ts").read_text().replace("// @ts-expect-error: not a theme\n", "", 1)
    (root / "sample.ts").write_text(broken)
    run = subprocess.run(
        [str(NODE_MODULES / ".bin" / "tsc"), "-p", "tsconfig.json"],
        cwd=root, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode != 0 and "pink" in run.stdout


SSR = """
const before = new Set(Object.getOwnPropertyNames(globalThis));
const m = await import('retell-widget');
const added = Object.getOwnPropertyNames(globalThis).filter((k) => !before.has(k));
let thrown = '';
try { new m.RetellWidget({ proxyEndpoint: '/x' }); } catch (e) { thrown = e.name; }
console.log(JSON.stringify({
  named: typeof m.RetellWidget, same: m.default === m.RetellWidget, version: m.RetellWidget.version,
  added, thrown,
}));
"""


def test_import_under_node_touches_nothing(packed):
    """Server-side rendering imports the module: no window, no document, nothing global."""
    run = subprocess.run(
        ["node", "--input-type=module", "-e", SSR],
        cwd=packed.parents[1], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    version = json.loads((STATIC / "package.json").read_text())["version"]
    assert result == {
        "named": "function", "same": True, "version": version, "added": [],
        "thrown": "ReferenceError",  # constructing one needs a DOM; importing does not
    }  # fmt: skip


# --- the declarations against the source -------------------------------------------------


def block(name: str) -> str:
    """The body of `interface <name> {` / `class <name> {` / `type <name> =` in index.d.ts."""
    match = re.search(rf"(?:interface|class) {name}\b[^{{]*{{(.*?)\n}}", TYPES, re.S)
    if match:
        return match.group(1)
    return re.search(rf"type {name} =(.*?);", TYPES, re.S).group(1)


def union(name: str) -> set[str]:
    return set(re.findall(r"'([\w-]+)'", block(name)))


def source(*globs: str) -> str:
    return "\n".join(p.read_text() for g in globs for p in sorted(SRC.glob(g)))


WIDGET = source("widget.js", "loader.js")
PARTS = source("chat/*.js", "transcript/*.js", "consent/*.js", "feedback/*.js", "verify/*.js")
# Methods of the class that are its plumbing, not its API (parts call some of them).
INTERNAL = {
    "constructor", "label", "set", "call", "fire", "css", "consented", "run", "onEngine",
    "words", "release", "end", "fail", "settle", "setMuted", "chat", "use",
}  # fmt: skip


def test_every_option_the_source_reads_is_declared():
    declared = set(re.findall(r"^  (\w+)\?:", block("RetellWidgetOptions"), re.M))
    read = set(re.findall(r"\b(?:o|w\.o|this\.o)\.(\w+)", WIDGET + PARTS))
    read |= set(re.findall(r"\bcall\('(\w+)'", WIDGET))  # callbacks
    read |= set(re.findall(r"\btell\([^;]*?, '(on\w+)'\)", PARTS))
    read |= set(re.findall(r"^ {6}(\w+): data[.\s]", WIDGET, re.M))  # the data-attribute embed
    assert read <= declared, f"options the types miss: {sorted(read - declared)}"
    assert declared <= read, f"declared but never read: {sorted(declared - read)}"


def test_every_event_is_declared():
    declared = set(re.findall(r"'retell-widget:([\w-]+)'", block("RetellWidgetEventMap")))
    fired = set(re.findall(r"\bfire\('([\w-]+)'", WIDGET + PARTS))
    fired |= set(re.findall(r"\btell\('([\w-]+)'", PARTS))
    assert fired == declared


def test_every_state_is_declared():
    states = set(re.findall(r"\b(?:this|w)\.set\('([\w-]+)'", WIDGET + PARTS))
    states |= set(re.findall(r"this\.state = '([\w-]+)'", WIDGET))
    assert states == union("WidgetState")


def test_every_error_code_is_declared():
    strings = source("i18n.js", "verify/strings.js")
    call = set(re.findall(r"\be_(\w+):", strings)) | set(re.findall(r"\bfail\('(\w+)'", WIDGET))
    call |= set(re.findall(r"code: '(\w+)'", WIDGET + source("engines/*.js", "verify/*.js")))
    assert call == union("CallErrorCode")
    chat = set(re.findall(r"\bce_(\w+):", source("chat/strings.js")))
    chat |= set(re.findall(r"\berror\('(\w+)'", source("chat/index.js")))
    assert chat <= union("ChatErrorCode")


def test_every_public_method_is_declared_and_exists():
    body = WIDGET[WIDGET.index("export class RetellWidget") :]
    methods = set(re.findall(r"^  (?:static )?(\w+)\(", body, re.M)) - INTERNAL
    declared = set(re.findall(r"^  (\w+)\(", block("RetellWidget"), re.M)) - {"constructor"}
    assert methods == declared
