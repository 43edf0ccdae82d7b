#!/bin/sh
# Creates or upgrades Temporal's PostgreSQL schemas (persistence and
# visibility). Runs once per `docker compose up` in the temporal-schema job;
# every step is idempotent, so it is safe on an existing database and it is
# also how a Temporal upgrade migrates the schema.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${POSTGRES_USER:=temporal}"
: "${DB_PORT:=5432}"
export SQL_PASSWORD="${POSTGRES_PWD:?POSTGRES_PWD is required}"
SCHEMA=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

for db in temporal temporal_visibility; do
  case $db in
    temporal) dir=$SCHEMA/temporal/versioned ;;
    *) dir=$SCHEMA/visibility/versioned ;;
  esac
  sql --db "$db" create || true # exists already on every run but the first
  # setup-schema -v 0.0 only creates the version table when it is missing.
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$dir"
done
echo "temporal schema ready"
