#!/usr/bin/env bash
# The README's test command: installs what the suite needs and the venv lacks (Debian's
# Chromium and its driver: the report tests load the HTML report in headless Chromium), then
# runs pytest with any arguments given (e.g. `scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  echo "scripts/test.sh: installing Chromium and its driver (apt-get) for the report tests" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver; }; then
    echo "scripts/test.sh: could not install chromium and chromium-driver; install them" \
         "(Debian/Ubuntu packages of those names, /usr/bin/chromium and /usr/bin/chromedriver)" \
         "and run this again" >&2
    exit 1
  fi
fi
exec .venv/bin/python -m pytest "$@"
