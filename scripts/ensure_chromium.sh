#!/usr/bin/env bash
# The UI test (tests/test_ui_backfill.py) drives Debian's headless Chromium; `make test` runs this
# first so that a fresh machine needs no step of its own. Installs it with apt-get when missing;
# where that is impossible (no root, no apt-get, no network) it says so and the browser tests fail
# with the same advice.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "${RECSYS_CHROMIUM:-}" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "test: chromium not found; installing it with apt-get (for tests/test_ui_backfill.py)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
        && { echo "test: installed $(chromium --version 2>/dev/null || echo chromium)"; exit 0; }
fi
echo "test: could not install chromium (needs root and apt-get with network access); install it" \
     "or point RECSYS_CHROMIUM at one" >&2
exit 0
