#!/bin/sh
# The app database and its least-privilege users. The MariaDB image runs this once, when the
# app-db volume is first initialised (/docker-entrypoint-initdb.d); no manual GRANT steps.
#
#   <prefix>_migrate  DDL + DML on the app database: `orderflow db upgrade` (Alembic) only
#   <prefix>_worker   SELECT, INSERT, UPDATE, DELETE: the workers' activities
#   <prefix>_api      SELECT: the HTTP API only reads (/state, /orders, /metrics, /healthz)
#
# Passwords come from the environment (compose passes them from .env); keep them to letters,
# digits and -_.+ (they are written into SQL). tests/test_compose.py runs this script against a
# real MariaDB with another prefix and database name, and drives an order through those users.
set -eu

DB="${APP_DB_NAME:-orderflow}"
PREFIX="${APP_DB_USER_PREFIX:-orderflow}"
for var in APP_DB_MIGRATE_PASSWORD APP_DB_WORKER_PASSWORD APP_DB_API_PASSWORD; do
  eval "value=\${$var:?$var must be set}"
  case "$value" in *[!A-Za-z0-9_.+-]*) echo "$var: use letters, digits and -_.+ only" >&2; exit 1;; esac
done

# Inside the image: root over the local socket. Tests point it at their own server.
if [ -z "${APP_DB_INIT_CLIENT:-}" ]; then
  export MYSQL_PWD="${MARIADB_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD must be set}"
  APP_DB_INIT_CLIENT="mariadb --protocol=socket -uroot"
fi

$APP_DB_INIT_CLIENT <<SQL
CREATE DATABASE IF NOT EXISTS \`${DB}\` CHARACTER SET utf8mb4;

CREATE USER IF NOT EXISTS '${PREFIX}_migrate'@'%' IDENTIFIED BY '${APP_DB_MIGRATE_PASSWORD}';
GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX, REFERENCES ON \`${DB}\`.* TO '${PREFIX}_migrate'@'%';

CREATE USER IF NOT EXISTS '${PREFIX}_worker'@'%' IDENTIFIED BY '${APP_DB_WORKER_PASSWORD}';
GRANT SELECT, INSERT, UPDATE, DELETE ON \`${DB}\`.* TO '${PREFIX}_worker'@'%';

CREATE USER IF NOT EXISTS '${PREFIX}_api'@'%' IDENTIFIED BY '${APP_DB_API_PASSWORD}';
GRANT SELECT ON \`${DB}\`.* TO '${PREFIX}_api'@'%';
SQL
echo "app database ${DB}: users ${PREFIX}_migrate, ${PREFIX}_worker, ${PREFIX}_api"
