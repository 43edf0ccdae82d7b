#!/usr/bin/env bash
# Runs the peer benchmark (cmd/benchpeer: the bench's load shapes on a
# RabbitMQ queue per user) against a local broker, setting one up if needed:
#   - something already listens on 127.0.0.1:5672: that broker is used and
#     left running;
#   - otherwise RabbitMQ is installed from Debian's packages if missing
#     (apt-get, with sudo when not root) and started for this run only,
#     without systemd, with its node, data and logs under bin/rabbitmq/, on
#     loopback only; it is stopped when this script exits.
# Then it builds bin/benchpeer and runs it: the table goes to stdout, the
# results to bin/peer.json. Usage: scripts/bench-peer.sh [benchpeer flags],
# e.g. scripts/bench-peer.sh -scale 0.1
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
base="$root/bin/rabbitmq"
port=5672
start_timeout=90

log() { echo "bench-peer: $*" >&2; }
die() { log "$*"; exit 1; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root or sudo to run: $*"
  fi
}

# server prints the broker's start script. Debian's /usr/sbin/rabbitmq-server
# is a wrapper that switches to the rabbitmq user and its HOME, so the real
# script behind it is used instead.
server() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    echo /usr/lib/rabbitmq/bin/rabbitmq-server
  else
    PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v rabbitmq-server || true
  fi
}

install_rabbitmq() {
  local apt=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends rabbitmq-server)
  log "installing rabbitmq-server from Debian's packages"
  local t0=$SECONDS
  if ! as_root "${apt[@]}" >"$base/install.log" 2>&1; then
    log "install failed; running apt-get update and trying again"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$base/install.log" 2>&1 ||
      { tail -20 "$base/install.log" >&2; die "apt-get update failed (log: $base/install.log)"; }
    as_root "${apt[@]}" >>"$base/install.log" 2>&1 ||
      { tail -20 "$base/install.log" >&2; die "apt-get install rabbitmq-server failed (log: $base/install.log)"; }
  fi
  log "installed in $((SECONDS - t0)) s"
}

broker_pid=
epmd_was_running=
stop_broker() {
  [ -n "$broker_pid" ] || return 0
  log "stopping the broker this script started (pid $broker_pid)"
  # The start script traps TERM and stops the Erlang VM gracefully.
  local vm
  vm=$(ps -o pid= --ppid "$broker_pid" 2>/dev/null | tr -d ' ' || true)
  kill -TERM "$broker_pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$broker_pid" 2>/dev/null; then
    log "the broker did not stop in 30 s: killing it"
    kill -KILL "$broker_pid" ${vm:+$vm} 2>/dev/null || true
  fi
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=
  # erl starts epmd as a daemon that outlives the node: stop it if it was
  # not running before (epmd -kill refuses while other nodes use it).
  if [ -z "$epmd_was_running" ] && command -v epmd >/dev/null 2>&1; then
    ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill >/dev/null 2>&1 || true
  fi
  rm -rf "$base/mnesia"
}
trap stop_broker EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$base"
go build -o bin/benchpeer ./cmd/benchpeer

if listening "$port"; then
  log "using the broker already listening on 127.0.0.1:$port (left running)"
else
  if [ -z "$(server)" ]; then
    install_rabbitmq
  fi
  srv=$(server)
  [ -n "$srv" ] || die "rabbitmq-server is still not installed (log: $base/install.log)"
  listening 4369 && epmd_was_running=1
  rm -rf "$base/mnesia"
  mkdir -p "$base/mnesia" "$base/log"
  # Deterministic configuration of our own: no /etc/rabbitmq files, no
  # plugins, loopback only (AMQP, Erlang distribution and epmd).
  : >"$base/rabbitmq-env.conf"
  echo '[].' >"$base/enabled_plugins"
  printf 'listeners.tcp.default = 127.0.0.1:%s\n' "$port" >"$base/rabbitmq.conf"
  log "starting RabbitMQ ($srv) with its data in $base"
  HOME="$base" \
    RABBITMQ_NODENAME=benchpeer@localhost \
    RABBITMQ_MNESIA_BASE="$base/mnesia" \
    RABBITMQ_LOG_BASE="$base/log" \
    RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
    RABBITMQ_PID_FILE="$base/mnesia/benchpeer.pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    "$srv" >"$base/log/console.log" 2>&1 </dev/null &
  broker_pid=$!
  t0=$SECONDS
  until listening "$port"; do
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      wait "$broker_pid" 2>/dev/null && rc=0 || rc=$?
      tail -30 "$base/log/console.log" >&2 || true
      die "RabbitMQ exited ($rc) before listening on $port (logs: $base/log)"
    fi
    if ((SECONDS - t0 >= start_timeout)); then
      tail -30 "$base/log/console.log" >&2 || true
      die "RabbitMQ did not listen on 127.0.0.1:$port within $start_timeout s (logs: $base/log)"
    fi
    sleep 0.5
  done
  log "RabbitMQ is up after $((SECONDS - t0)) s"
fi

bin/benchpeer -json bin/peer.json "$@"
