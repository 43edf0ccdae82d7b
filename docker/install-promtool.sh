#!/bin/sh
# Installs promtool (Debian/Ubuntu package "prometheus") when it is missing,
# for docker/deploy_test.go's `promtool check config`. Does nothing when
# promtool is already on PATH. Called by `make tools` (and so by `make test`).
set -eu

if command -v promtool >/dev/null 2>&1; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-promtool: promtool is missing and there is no apt-get here;" >&2
  echo "install Prometheus' promtool (https://prometheus.io/download/) and put it on PATH" >&2
  exit 1
fi

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "install-promtool: promtool is missing; run as root: apt-get install prometheus" >&2
    exit 1
  fi
fi

echo "install-promtool: installing the Debian package prometheus (for promtool)" >&2
export DEBIAN_FRONTEND=noninteractive
# The package's postinst would start the server; containers and CI have no
# use for it, so service starts are refused while it installs.
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

if ! $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; then
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null 2>&1 || { echo "install-promtool: prometheus installed but promtool is not on PATH" >&2; exit 1; }
promtool --version 2>&1 | head -n 1 >&2
