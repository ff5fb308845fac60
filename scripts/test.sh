#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lint and format check, type check, build, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx biome ci .
npx tsc --noEmit -p tsconfig.json
# The layers of src/ and no import cycles (rules in .dependency-cruiser.cjs).
npx depcruise src --config .dependency-cruiser.cjs --ignore-known etc/layers-known-violations.json
npx tsup --silent
npm run --silent api:check
npx vitest run "$@"
