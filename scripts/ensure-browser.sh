#!/usr/bin/env bash
# Make sure headless Chromium and its driver are installed for the browser
# tests (tests/test_admin_browser.py): Debian's packages, never a download by
# Selenium Manager. Does nothing when both are already there.
set -euo pipefail

log() { echo "ensure-browser: $*"; }

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "chromium or chromedriver is missing and apt-get is not available: the browser tests will be skipped"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi

log "installing chromium and chromium-driver"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# A font too, so that the screenshots the tests save show text.
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core >/dev/null
log "$(/usr/bin/chromium --version 2>/dev/null || echo 'chromium installed')"
