#!/usr/bin/env bash
# Checks the workspace's `rust-version` (Cargo.toml) against the locked dependencies, offline,
# the way cargo-msrv's "verify" would without downloading old toolchains:
#   - walks the resolved graph from the workspace members through normal and build
#     dependencies, for the host's target (ferrocsp builds on Linux only), as locked in
#     Cargo.lock (`cargo metadata --locked --offline` when the registry cache has them);
#   - fails unless rust-version >= the highest `rust-version` among them, and names it;
#   - fails if rust-version is higher than that maximum without a reason written in
#     Cargo.toml (a "msrv-floor:" comment), so the number stays the true minimum;
#   - prints dev-only dependencies that need more (loom's `generator`): they only matter
#     for running the tests (scripts/test.sh uses the current toolchain).
# What it does not prove: that our own code compiles on that toolchain. clippy's
# incompatible_msrv lint (on by default, -D warnings in scripts/test.sh) flags std APIs
# stabilised after rust-version; language features are not checked.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

host=$(rustc -vV | sed -n 's/^host: //p')
meta=$(mktemp "${TMPDIR:-/tmp}/ferrocsp-msrv.XXXXXX")
trap 'rm -f "$meta"' EXIT
cargo metadata --format-version 1 --locked --offline --filter-platform "$host" >"$meta" 2>/dev/null \
  || cargo metadata --format-version 1 --locked --filter-platform "$host" >"$meta"

python3 - "$meta" <<'PY'
import json
import re
import sys

with open(sys.argv[1], encoding="utf-8") as f:
    meta = json.load(f)
pkgs = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
members = meta["workspace_members"]


def ver(s):
    parts = [int(x) for x in (s or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def reach(kinds):
    seen, stack = set(), list(members)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        for dep in nodes[i]["deps"]:
            if any(k["kind"] in kinds for k in dep["dep_kinds"]):
                stack.append(dep["pkg"])
    return seen - set(members)


def show(v):
    return ".".join(map(str, v[:2] if v[2] == 0 else v))


build = reach({None, "build"})
declared = {ver(pkgs[m].get("rust_version")) for m in members}
if len(declared) != 1:
    sys.exit(f"msrv: the workspace members declare different rust-versions: {declared}")
(msrv,) = declared
need = max(ver(pkgs[i].get("rust_version")) for i in build)
top = sorted(
    (i for i in build if ver(pkgs[i].get("rust_version")) == need), key=lambda i: pkgs[i]["name"]
)
names = ", ".join(f"{pkgs[i]['name']} {pkgs[i]['version']}" for i in top)
print(f"msrv: rust-version {show(msrv)}; {len(build)} locked dependencies built, the most "
      f"demanding needs {show(need)} ({names})")
if msrv < need:
    sys.exit(f"msrv: error: Cargo.toml says rust-version = \"{show(msrv)}\" but {names} "
             f"needs Rust {show(need)}: raise [workspace.package] rust-version")
if msrv > need:
    toml = open("Cargo.toml", encoding="utf-8").read()
    if not re.search(r"msrv-floor:", toml):
        sys.exit(f"msrv: error: rust-version {show(msrv)} is above what the dependencies need "
                 f"({show(need)}); lower it, or write the reason in a 'msrv-floor:' comment")
dev = reach({None, "build", "dev"}) - build
over = sorted(
    {f"{pkgs[i]['name']} {pkgs[i]['version']} ({pkgs[i]['rust_version']})"
     for i in dev if ver(pkgs[i].get("rust_version")) > msrv}
)
if over:
    print(f"msrv: note: tests only (dev-dependencies) need more: {', '.join(over)}")
PY
