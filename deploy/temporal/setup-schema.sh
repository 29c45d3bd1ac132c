#!/bin/sh
# Temporal's persistence and visibility schemas with the official tool (temporal-sql-tool from
# the temporalio/admin-tools image): create, setup-schema -v 0.0, update-schema, the steps
# temporalio's own compose setup runs for MySQL 8. Safe to run again (after a restart or an
# image upgrade): the tool creates the database only if missing (CREATE DATABASE IF NOT EXISTS),
# setup-schema skips a database already past version 0.0, and update-schema applies only the
# versions that are missing.
set -eu
: "${MYSQL_SEEDS:?}" "${MYSQL_USER:?}" "${SQL_PASSWORD:?}"
PORT="${DB_PORT:-3306}"
SCHEMA=/etc/temporal/schema/mysql/v8

for attempt in $(seq 1 60); do
  nc -z -w 5 "$MYSQL_SEEDS" "$PORT" && break
  echo "waiting for $MYSQL_SEEDS:$PORT ($attempt)"; sleep 2
done

tool() { temporal-sql-tool --plugin mysql8 --ep "$MYSQL_SEEDS" -p "$PORT" -u "$MYSQL_USER" "$@"; }
tool --db temporal create
tool --db temporal setup-schema -v 0.0
tool --db temporal update-schema -d "$SCHEMA/temporal/versioned"
tool --db temporal_visibility create
tool --db temporal_visibility setup-schema -v 0.0
tool --db temporal_visibility update-schema -d "$SCHEMA/visibility/versioned"
echo "Temporal schema is up to date"
