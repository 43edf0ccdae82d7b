#!/bin/sh
# Creates Turnstile's Temporal namespace and the search attributes its session
# workflows upsert (UserId Keyword, QueueLength Int, Paused Bool). Idempotent.
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${TURNSTILE_TEMPORAL_NAMESPACE:=default}"
: "${NAMESPACE_RETENTION:=72h}"
export TEMPORAL_ADDRESS
NS=$TURNSTILE_TEMPORAL_NAMESPACE

tries=0
until temporal operator cluster health >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 60 ]; then
    echo "temporal at $TEMPORAL_ADDRESS is not healthy after 60 tries" >&2
    exit 1
  fi
  sleep 2
done

temporal operator namespace describe -n "$NS" >/dev/null 2>&1 ||
  temporal operator namespace create -n "$NS" --retention "$NAMESPACE_RETENTION"

existing=$(temporal operator search-attribute list -n "$NS")
for attr in UserId:Keyword QueueLength:Int Paused:Bool; do
  name=${attr%%:*}
  type=${attr#*:}
  if printf '%s\n' "$existing" | grep -qw "$name"; then
    echo "search attribute $name exists"
  else
    temporal operator search-attribute create -n "$NS" --name "$name" --type "$type"
  fi
done
echo "namespace $NS ready"
