#!/bin/sh
# Temporal's own MySQL user, limited to its two databases (the MySQL image runs this once, when
# the temporal-db volume is first initialised). The schema tool and the server use this user.
set -eu
: "${TEMPORAL_DB_PASSWORD:?TEMPORAL_DB_PASSWORD must be set}"
case "$TEMPORAL_DB_PASSWORD" in *[!A-Za-z0-9_.+-]*) echo "TEMPORAL_DB_PASSWORD: use letters, digits and -_.+ only" >&2; exit 1;; esac
export MYSQL_PWD="${MYSQL_ROOT_PASSWORD:?MYSQL_ROOT_PASSWORD must be set}"
mysql --protocol=socket -uroot <<SQL
CREATE DATABASE IF NOT EXISTS \`temporal\` CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS \`temporal_visibility\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'temporal'@'%' IDENTIFIED BY '${TEMPORAL_DB_PASSWORD}';
GRANT ALL PRIVILEGES ON \`temporal\`.* TO 'temporal'@'%';
GRANT ALL PRIVILEGES ON \`temporal_visibility\`.* TO 'temporal'@'%';
SQL
