#!/usr/bin/env bash
# Regenerates package-lock.json so that `npm ci` accepts it on any machine: every platform's
# optional packages (esbuild, rollup, biome… binaries) with `resolved` and `integrity`, and the
# versions already locked kept as they are. Run it after changing package.json, e.g.
#
#   npm install --package-lock-only --omit-lockfile-registry-resolved=false commander   # or edit package.json
#   bash scripts/lock.sh
#
# Why a script: this machine's npm config (~/.npmrc) sets omit-lockfile-registry-resolved=true, and
# an `npm install` through a node_modules that holds only this platform's packages writes a lock
# without the others', which `npm ci` then rejects. So the lock is resolved in a scratch copy of the
# project (no node_modules), with that setting overridden on the command line.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=$(mktemp -d "${TMPDIR:-/tmp}/virtkit-lock.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
cp package.json "$scratch/"
[ -f package-lock.json ] && cp package-lock.json "$scratch/"

(
  cd "$scratch"
  npm install --package-lock-only --omit-lockfile-registry-resolved=false --ignore-scripts \
    --no-audit --no-fund --loglevel=error
  # Entries written earlier without `resolved` keep lacking it (npm does not refetch what it has
  # locked); give them the registry's tarball URL. `integrity` is kept, so `npm ci` verifies every
  # download against it and a wrong URL fails instead of installing something else.
  REGISTRY=$(npm config get registry) node -e '
    const fs = require("node:fs");
    const registry = process.env.REGISTRY.replace(/\/+$/, "");
    const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8"));
    let filled = 0;
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === "" || entry.link || entry.resolved || !entry.version || !entry.integrity) continue;
      const name = entry.name ?? path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length);
      const base = name.slice(name.lastIndexOf("/") + 1);
      entry.resolved = `${registry}/${name}/-/${base}-${entry.version}.tgz`;
      filled++;
    }
    fs.writeFileSync("package-lock.json", `${JSON.stringify(lock, null, 2)}\n`);
    const missing = Object.entries(lock.packages).filter(([p, e]) => p !== "" && !e.link && !(e.resolved && e.integrity));
    if (missing.length > 0) {
      console.error(`lock: entries without resolved/integrity: ${missing.map(([p]) => p).join(", ")}`);
      process.exit(1);
    }
    console.error(`lock: ${Object.keys(lock.packages).length - 1} packages, ${filled} resolved URLs filled in`);
  '
)
cp "$scratch/package-lock.json" package-lock.json
