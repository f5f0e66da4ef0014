#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed at /usr/bin/chromium (used by the end-to-end tests and
# the UI benchmark through playwright-core; no browser is ever downloaded by npm).
# Safe to run repeatedly: does nothing when the browser is already there.
set -euo pipefail

CHROMIUM="${KVSCOPE_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: $CHROMIUM is missing and apt-get is not available; install Chromium and set KVSCOPE_CHROMIUM" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: installing chromium needs root (or sudo)" >&2
    exit 1
  fi
fi

echo "chromium: installing Debian's chromium package…"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium: $("$CHROMIUM" --version)"
