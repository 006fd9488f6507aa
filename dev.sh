#!/usr/bin/env bash
# jobscheduler's two set-up commands (see README.md):
#   ./dev.sh run    create .venv, install, migrate, load the demo data, serve on http://127.0.0.1:8000
#   ./dev.sh test   install, start what the tests need, run the whole suite on SQLite and PostgreSQL
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PG_URL=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/jobscheduler}

say() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed" want
    want=$(sha1sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing jobscheduler and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
        echo "$want" > "$stamp"
    fi
}

# PostgreSQL and Redis for the tests: this machine kind starts both; start them if they are down.
ensure_services() {
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        say "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        say "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
        for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }
}

ensure_chromium() {
    [ -x /usr/bin/chromium ] && return
    if [ "$(id -u)" = 0 ]; then
        say "installing Debian's chromium for the browser tests"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "the browser tests need /usr/bin/chromium: sudo apt-get install -y chromium" >&2
        exit 1
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
run)
    ensure_venv
    export DEBUG=${DEBUG:-true}
    export SCHEDULER_EMBEDDED=${SCHEDULER_EMBEDDED:-true}
    "$VENV/bin/python" manage.py migrate --noinput
    "$VENV/bin/python" manage.py loaddata demo
    say "open http://127.0.0.1:8000 and log in as alice / alice (admin: admin / admin)"
    exec "$VENV/bin/python" manage.py serve "$@"
    ;;
test)
    ensure_venv
    ensure_services
    ensure_chromium
    say "test suite on SQLite"
    env -u DB_CONNECTION "$VENV/bin/python" -m pytest "$@"
    say "test suite on PostgreSQL ($PG_URL)"
    DB_CONNECTION="$PG_URL" "$VENV/bin/python" -m pytest -m "not browser" "$@"
    ;;
services)
    ensure_services
    ;;
*)
    echo "usage: ./dev.sh run | ./dev.sh test [pytest args]" >&2
    exit 2
    ;;
esac
