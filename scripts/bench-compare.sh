#!/usr/bin/env bash
# Runs the benchmark against two fresh single-process systems, the naive
# path (every request a regular activity: TURNSTILE_LOCAL_TYPES=none) and the
# default (short types as local activities), and prints both tables and the
# ratio of completed requests per second. Usage: scripts/bench-compare.sh [bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/turnstile ./cmd/turnstile
go build -o bin/bench ./cmd/bench
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

run() { # name local-types
  local name=$1 local_types=$2
  shift 2
  TURNSTILE_DATA_DIR="$work/$name" TURNSTILE_API_ADDR=127.0.0.1:18480 TURNSTILE_TEMPORAL_PORT=18433 \
    TURNSTILE_UI_PORT=18434 TURNSTILE_MONGODB_PORT=18435 TURNSTILE_LOG_LEVEL=error \
    TURNSTILE_MAX_QUEUE=5000 \
    TURNSTILE_AUTH_RATE=100000 TURNSTILE_AUTH_BURST=100000 TURNSTILE_LOCAL_TYPES="$local_types" \
    bin/turnstile dev >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  for _ in $(seq 1 120); do curl -fs http://127.0.0.1:18480/readyz >/dev/null 2>&1 && break; sleep 0.5; done
  echo "### $name (TURNSTILE_LOCAL_TYPES=$local_types)"
  bin/bench -api http://127.0.0.1:18480 -compare=false -rss-pids "$pid" -json "bin/bench-$name.json" "$@" 2>"$work/$name.progress" || {
    cat "$work/$name.progress" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}
shift_args=("$@")
run naive none "${shift_args[@]}"
run optimised echo "${shift_args[@]}"
python3 - "bin/bench-naive.json" "bin/bench-optimised.json" <<'PY' 2>/dev/null || true
import json, sys
a = {r["scenario"]["name"]: r for r in json.load(open(sys.argv[1]))["results"]}
b = {r["scenario"]["name"]: r for r in json.load(open(sys.argv[2]))["results"]}
print("\n### optimised / naive, completed requests per second")
for name in b:
    if name in a and a[name]["completed_per_s"]:
        print(f"{name:16s} {b[name]['completed_per_s']:8.0f} / {a[name]['completed_per_s']:8.0f} = {b[name]['completed_per_s']/a[name]['completed_per_s']:.2f}x")
PY
