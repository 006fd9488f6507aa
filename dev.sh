#!/usr/bin/env bash
# jobscheduler's two set-up commands (see README.md):
#   ./dev.sh run    create .venv, install, migrate, load the demo data (first time), serve on http://127.0.0.1:8000
#   ./dev.sh test   install, start what the tests need, run the whole suite on SQLite and PostgreSQL
#   ./dev.sh lint   ruff (lint and format) and mypy
# Works as root without a terminal (CI) as well as for a developer.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PG_URL=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/jobscheduler}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# Colours only on a terminal; CI logs get plain text.
if [ -t 2 ]; then BLUE=$'\033[1;34m' GREEN=$'\033[1;32m' RED=$'\033[1;31m' BOLD=$'\033[1m' PLAIN=$'\033[0m'
else BLUE='' GREEN='' RED='' BOLD='' PLAIN=''; fi
say() { printf '%s==>%s %s\n' "$BLUE" "$PLAIN" "$*" >&2; }

ensure_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=python3.11)")'
        say "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    # Reinstall when pyproject.toml changes (new dependencies), not on every start.
    local stamp="$VENV/.installed" want
    want=$(sha1sum pyproject.toml | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "installing jobscheduler and its dependencies into $VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip </dev/null || true
        "$VENV/bin/python" -m pip install --quiet -e '.[dev]' </dev/null
        echo "$want" > "$stamp"
    fi
}

# PostgreSQL and Redis for the tests: this machine kind has both installed; start them if they are down.
ensure_services() {
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        say "starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
        for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        say "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
        for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "Redis is not answering on 127.0.0.1:6379" >&2; exit 1; }
}

ensure_chromium() {
    [ -x /usr/bin/chromium ] && return
    if [ "$(id -u)" = 0 ]; then
        say "installing Debian's chromium for the browser tests"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium </dev/null >/dev/null
    else
        echo "the browser tests need /usr/bin/chromium: sudo apt-get install -y chromium" >&2
        exit 1
    fi
}

# One leg of the suite: pytest with its output kept for the summary, whose line goes to
# $LEGS_DIR/<name> (a leg may run in a background subshell).
# pytest's exit code 5 ("no tests collected") means the selection matched nothing, which must
# never pass silently: it is a failure, except for the PostgreSQL leg when the arguments
# selected only browser tests (which run on SQLite only).
LEGS_DIR=$(mktemp -d)
run_leg() {
    local name=$1 empty_ok=$2; shift 2
    local log
    log=$(mktemp)
    say "test suite on $name"
    local start=$SECONDS rc=0
    "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    local line
    line=$(grep -E '^(=+ )?(no tests ran|[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)).* in [0-9.]+s' "$log" \
        | tail -1 | sed -E 's/^=+ //; s/ =+$//')
    rm -f "$log"
    local verdict=ok
    if [ "$rc" = 5 ] && [ "$empty_ok" = yes ]; then
        line="nothing to run here (only browser tests were selected)"
    elif [ "$rc" = 5 ]; then
        verdict="FAILED (no tests were collected)"
    elif [ "$rc" != 0 ]; then
        verdict="FAILED (pytest exit code $rc)"
    fi
    printf '%-11s %-7s %s  [%ss wall]\n' "$name" "$verdict" "${line:-no summary}" $((SECONDS - start)) >"$LEGS_DIR/$name"
    [ "$verdict" = ok ]
}

summary() {
    local failed=$1
    printf '\n%s==> summary%s\n' "$BOLD" "$PLAIN" >&2
    for name in SQLite PostgreSQL; do
        [ -f "$LEGS_DIR/$name" ] && printf '    %s\n' "$(cat "$LEGS_DIR/$name")" >&2
    done
    rm -rf "$LEGS_DIR"
    if [ "$failed" = 0 ]; then
        printf '%s==> all tests passed%s\n' "$GREEN" "$PLAIN" >&2
    else
        printf '%s==> some tests FAILED (see above)%s\n' "$RED" "$PLAIN" >&2
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
run)
    ensure_venv
    port=8000
    args=("$@")
    for i in "${!args[@]}"; do
        case "${args[$i]}" in
        --port) port=${args[$((i + 1))]:-8000} ;;
        --port=*) port=${args[$i]#--port=} ;;
        esac
    done
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use (another ./dev.sh run?); pick another: ./dev.sh run --port 8001" >&2
        exit 1
    fi
    export DEBUG=${DEBUG:-true}
    export SCHEDULER_EMBEDDED=${SCHEDULER_EMBEDDED:-true}
    "$VENV/bin/python" manage.py migrate --noinput
    # The demo data comes once, into an empty database: later starts keep what you changed.
    if "$VENV/bin/python" manage.py shell -c \
        'import sys; from django.contrib.auth.models import User; sys.exit(1 if User.objects.exists() else 0)' \
        </dev/null; then
        say "loading the demo data"
        "$VENV/bin/python" manage.py loaddata demo
    fi
    say "open http://127.0.0.1:$port and log in as alice / alice (operators: admin / admin at /admin/)"
    exec "$VENV/bin/python" manage.py serve "$@"
    ;;
test)
    ensure_venv
    ensure_services
    ensure_chromium
    # A private test database per run, so CI and developers can test on one machine at once.
    if [ -z "${TEST_DB_SUFFIX:-}" ]; then
        export TEST_DB_SUFFIX=devsh$$
        # Only the databases this run named itself (a caller's suffix may be in use elsewhere),
        # also when a test left a connection open or the run was interrupted.
        trap 'rm -f test_jobs_devsh$$.sqlite3*
              psql "${PG_URL%/*}/postgres" -qXc "DROP DATABASE IF EXISTS \"test_${PG_URL##*/}_devsh$$\" WITH (FORCE)" \
                  >/dev/null 2>&1 || true' EXIT
    fi
    prefix=${CHANNEL_LAYER_PREFIX:-devsh$$}
    sqlite_leg=(env -u DB_CONNECTION CHANNEL_LAYER_PREFIX="${prefix}sq" "$VENV/bin/python" -m pytest "$@")
    # The browser tests drive the same server code; they run once, on SQLite.
    pg_leg=(env DB_CONNECTION="$PG_URL" CHANNEL_LAYER_PREFIX="${prefix}pg" "$VENV/bin/python" -m pytest -m "not browser" "$@")
    failed=0
    if [ "${TEST_LEGS:-parallel}" = parallel ] && [ "$(nproc)" -ge 2 ]; then
        # Both legs at once: each spends most of its time waiting on real processes, servers
        # and the browser, so together they take little longer than one. Their databases and
        # channel-layer prefixes are their own. The PostgreSQL leg's output follows the SQLite one's.
        pg_log=$(mktemp)
        run_leg PostgreSQL yes "${pg_leg[@]}" >"$pg_log" 2>&1 &
        pg_pid=$!
        run_leg SQLite no "${sqlite_leg[@]}" || failed=1
        wait "$pg_pid" || failed=1
        say "the PostgreSQL leg (it ran beside the SQLite leg)"
        cat "$pg_log"
        rm -f "$pg_log"
    else
        run_leg SQLite no "${sqlite_leg[@]}" || failed=1
        run_leg PostgreSQL yes "${pg_leg[@]}" || failed=1
    fi
    summary "$failed"
    exit "$failed"
    ;;
services)
    ensure_services
    ;;
lint)
    ensure_venv
    rc=0
    say "ruff check";  "$VENV/bin/ruff" check . || rc=1
    say "ruff format"; "$VENV/bin/ruff" format --check . || rc=1
    say "mypy";        "$VENV/bin/mypy" || rc=1
    exit "$rc"
    ;;
*)
    echo "usage: ./dev.sh run [--port N] | ./dev.sh test [pytest args] | ./dev.sh lint | ./dev.sh services" >&2
    exit 2
    ;;
esac
