#!/bin/sh
# Installs headless Chromium (Debian package "chromium") when it is missing,
# for the web client's browser test (tests/browser_test.go). Does nothing
# when /usr/bin/chromium (or $TURNSTILE_CHROMIUM) is there already. Called
# by `make tools` (and so by `make test`).
set -eu

bin=${TURNSTILE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$bin" ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" install-chromium chromium fonts-dejavu-core
[ -x "$bin" ] || { echo "install-chromium: chromium installed but $bin is missing" >&2; exit 1; }
"$bin" --version >&2
