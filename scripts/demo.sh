#!/usr/bin/env bash
# The demo: boots a tiny Linux guest through the embedded driver and shuts it down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsx scripts/demo.ts "$@"
