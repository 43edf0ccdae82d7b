#!/bin/sh
# Installs promtool (Debian/Ubuntu package "prometheus") when it is missing,
# for docker/deploy_test.go's `promtool check config`. Does nothing when
# promtool is already on PATH. Called by `make tools` (and so by `make test`).
set -eu

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
"$(dirname "$0")/../scripts/apt-install.sh" install-promtool prometheus
command -v promtool >/dev/null 2>&1 || { echo "install-promtool: prometheus installed but promtool is not on PATH" >&2; exit 1; }
promtool --version 2>&1 | head -n 1 >&2
