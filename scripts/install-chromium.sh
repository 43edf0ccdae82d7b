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

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: $bin is missing and there is no apt-get here;" >&2
  echo "install Chromium and set TURNSTILE_CHROMIUM to its path" >&2
  exit 1
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "install-chromium: chromium is missing; run as root: apt-get install chromium" >&2
    exit 1
  fi
fi

echo "install-chromium: installing the Debian package chromium" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
[ -x "$bin" ] || { echo "install-chromium: chromium installed but $bin is missing" >&2; exit 1; }
"$bin" --version >&2
