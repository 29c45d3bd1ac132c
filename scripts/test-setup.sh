#!/usr/bin/env bash
# What `make test` needs beyond the Python packages, set up on a fresh machine (`make setup`):
#   - MariaDB answering on 127.0.0.1:3306 (tests marked mysql; never skipped): started when it
#     is installed but not running;
#   - Debian's chromium (tests/test_browser.py drives it through Playwright; never `playwright install`);
#   - Debian's docker-compose (tests/test_compose.py validates docker-compose.yml; no daemon needed).
# Missing tools are installed with apt-get when this runs as root with apt-get; otherwise it
# prints one line saying what to install and exits non-zero. It never skips silently.
set -euo pipefail

can_apt() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_updated=""
apt_install() {  # package...
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need_command() {  # command package why
  local cmd=$1 package=$2 why=$3
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if can_apt; then
    echo "make setup: installing $package ($why)"
    apt_install "$package"
    command -v "$cmd" >/dev/null 2>&1 && return 0
  fi
  echo "make setup: '$cmd' is missing: install it with 'sudo apt-get install -y $package' ($why)" >&2
  exit 1
}

mariadb_answers() {
  if command -v mysqladmin >/dev/null 2>&1; then
    mysqladmin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1
  else
    (exec 3<>/dev/tcp/127.0.0.1/3306) 2>/dev/null
  fi
}

if [ -n "${ORDERFLOW_TEST_MYSQL:-}" ]; then
  echo "make setup: the mysql tests use ORDERFLOW_TEST_MYSQL; no local MariaDB started"
elif ! mariadb_answers; then
  mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  if [ ! -x "$mariadbd" ]; then
    echo "make setup: MariaDB does not answer on 127.0.0.1:3306 and is not installed: install mariadb-server (root may log in over TCP without a password), or set ORDERFLOW_TEST_MYSQL" >&2
    exit 1
  fi
  echo "make setup: starting MariaDB"
  if command -v start-stop-daemon >/dev/null 2>&1; then
    start-stop-daemon --start --oknodo --background --exec "$mariadbd"
  else
    "$mariadbd" >/dev/null 2>&1 &
  fi
  for _ in $(seq 1 60); do
    mariadb_answers && break
    sleep 1
  done
  if ! mariadb_answers; then
    echo "make setup: MariaDB ($mariadbd) was started but does not answer on 127.0.0.1:3306 after 60 s" >&2
    exit 1
  fi
fi

need_command docker-compose docker-compose "tests/test_compose.py validates docker-compose.yml"
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  need_command chromium chromium "tests/test_browser.py drives it through Playwright"
fi
