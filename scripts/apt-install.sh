#!/bin/sh
# apt-install.sh NAME PACKAGE...: installs Debian packages for a test tool
# (as root, or through passwordless sudo), refreshing the package lists
# only if the first try fails. Service starts are refused while it installs:
# a package's postinst may start a server that tests have no use for.
set -eu
name=$1
shift

if ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: there is no apt-get here; install $* by hand" >&2
  exit 1
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo -n"
  else
    echo "$name: run as root: apt-get install $*" >&2
    exit 1
  fi
fi

echo "$name: installing the Debian packages $*" >&2
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
created_policy=
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ -n "$created_policy" ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

if ! $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
  $SUDO apt-get update >/dev/null
  $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null
fi
