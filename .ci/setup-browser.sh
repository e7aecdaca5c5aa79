#!/usr/bin/env bash
# The viewer's browser tests (tests/view/test_view_browser.py) drive Debian's chromium through Playwright.
# Both come from package registries: chromium from Debian's apt, playwright from PyPI (its Python package
# only: never `playwright install`, which downloads a browser). Idempotent; run as root before the tests.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
PY="${PYTHON:-python}"
"$PY" -c "import playwright" 2>/dev/null || "$PY" -m pip install -q "playwright>=1.40"
/usr/bin/chromium --version
