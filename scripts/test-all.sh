#!/usr/bin/env bash
# Everything CI checks, in the order a failure is cheapest to find (README: "Run the tests").
# Installs Debian's chromium first when it is missing (end-to-end tests; needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-chromium.sh
npx tsc --noEmit -p tsconfig.json
npm run check
npx vitest run
npm run test:e2e
