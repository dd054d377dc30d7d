#!/usr/bin/env bash
# Makes a MariaDB server available on 127.0.0.1:3306 for corechat's tests and CI.
#
# Why a script and not a service: the test and CI machines have no systemd and may start with
# nothing installed, so everything the MySQL backend tests need is set up here, idempotently:
#   - installs mariadb-server/mariadb-client with apt-get if `mariadbd` is missing;
#   - starts `mariadbd` as user mysql (own datadir, loopback only) unless a server answers;
#   - creates the `corechat` user (password `corechat`) with ALL on `corechat\_%`.* so each
#     test can create and drop its own throwaway database `corechat_test_<random>`;
#   - raises max_connections (tests open many connections and kill some of them).
# Safe to run many times, and while a server is already running.
#
# Usage: scripts/mariadb.sh           set up (quiet on success apart from progress lines)
#        scripts/mariadb.sh --url     set up, then print the base URL for the tests
#
# Environment (optional): CORECHAT_MARIADB_DATADIR (default /var/lib/corechat-mariadb),
#                         CORECHAT_MARIADB_LOG (default /var/log/corechat-mariadb.log).
set -euo pipefail

PORT=3306
HOST=127.0.0.1
SOCKET_DIR=/run/mysqld
SOCKET="$SOCKET_DIR/mysqld.sock"
DATADIR="${CORECHAT_MARIADB_DATADIR:-/var/lib/corechat-mariadb}"
LOGFILE="${CORECHAT_MARIADB_LOG:-/var/log/corechat-mariadb.log}"
PIDFILE="$SOCKET_DIR/corechat-mariadbd.pid"
USER_NAME=corechat
USER_PASS=corechat
BASE_URL="mysql://$USER_NAME:$USER_PASS@$HOST:$PORT"

PRINT_URL=0
for arg in "$@"; do
    case "$arg" in
        --url) PRINT_URL=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "mariadb.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

log() { echo "mariadb.sh: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# 1. Install when missing. mariadbd lives in /usr/sbin, which may not be on PATH.
export PATH="$PATH:/usr/sbin:/sbin"
if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb >/dev/null 2>&1; then
    log "installing mariadb-server and mariadb-client"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    # The package's postinst tries to start the server through init scripts; without systemd
    # that may fail harmlessly, and the server is started below anyway. policy-rc.d stops it
    # from trying at all, so the install neither hangs nor leaves a second server behind.
    POLICY=/usr/sbin/policy-rc.d
    ADDED_POLICY=0
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
        "${SUDO[@]}" chmod +x "$POLICY"
        ADDED_POLICY=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends mariadb-server mariadb-client >&2
    if [ "$ADDED_POLICY" = 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY"
    fi
fi

# Root-level client calls go through the unix socket with unix_socket authentication (root
# of the OS is root of MariaDB on Debian's packages), so no root password is ever needed.
root_sql() {
    "${SUDO[@]}" mariadb --protocol=socket -S "$SOCKET" -uroot --batch --skip-column-names "$@"
}

answers() {
    "${SUDO[@]}" mariadb-admin --protocol=tcp -h "$HOST" -P "$PORT" -u"$USER_NAME" -p"$USER_PASS" \
        --connect-timeout=2 ping >/dev/null 2>&1 \
    || "${SUDO[@]}" mariadb-admin --protocol=socket -S "$SOCKET" -uroot --connect-timeout=2 \
        ping >/dev/null 2>&1
}

# 2. Start unless something already answers.
if answers; then
    log "a server already answers"
else
    "${SUDO[@]}" mkdir -p "$SOCKET_DIR" "$DATADIR"
    "${SUDO[@]}" chown mysql:mysql "$SOCKET_DIR" "$DATADIR"
    if [ -z "$(ls -A "$DATADIR" 2>/dev/null)" ]; then
        log "initialising $DATADIR"
        "${SUDO[@]}" mariadb-install-db --user=mysql --datadir="$DATADIR" \
            --auth-root-authentication-method=socket --skip-test-db >&2
    fi
    "${SUDO[@]}" touch "$LOGFILE"
    "${SUDO[@]}" chown mysql:mysql "$LOGFILE"
    log "starting mariadbd (log: $LOGFILE)"
    # Debian's /etc/mysql files are still read (they only set paths and charsets); everything
    # that matters here is given on the command line, which wins over them.
    "${SUDO[@]}" setsid mariadbd \
        --user=mysql \
        --datadir="$DATADIR" \
        --socket="$SOCKET" \
        --pid-file="$PIDFILE" \
        --bind-address="$HOST" \
        --port="$PORT" \
        --max-connections=500 \
        --max-allowed-packet=64M \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=1G \
        --innodb-io-capacity=4000 \
        --innodb-io-capacity-max=8000 \
        --innodb-flush-neighbors=0 \
        --log-error="$LOGFILE" \
        </dev/null >>"$LOGFILE" 2>&1 &
    server_pid=$!
    deadline=$((SECONDS + 60))
    until "${SUDO[@]}" mariadb-admin --protocol=socket -S "$SOCKET" -uroot --connect-timeout=2 \
            ping >/dev/null 2>&1; do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            log "mariadbd exited during start-up (port $PORT taken?); last lines of $LOGFILE:"
            tail -n 30 "$LOGFILE" >&2 || true
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "mariadbd did not answer within 60 s; last lines of $LOGFILE:"
            tail -n 30 "$LOGFILE" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    log "mariadbd is up"
fi

# 3. User, privileges and limits. Every statement is idempotent. When the server was started
# by someone else and the socket is elsewhere, fall back to connecting as corechat over TCP,
# which only works if a previous run already did this part.
if root_sql -e "SELECT 1" >/dev/null 2>&1; then
    root_sql <<SQL
CREATE USER IF NOT EXISTS '$USER_NAME'@'127.0.0.1' IDENTIFIED BY '$USER_PASS';
CREATE USER IF NOT EXISTS '$USER_NAME'@'localhost' IDENTIFIED BY '$USER_PASS';
GRANT ALL PRIVILEGES ON \`corechat\\_%\`.* TO '$USER_NAME'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`corechat\\_%\`.* TO '$USER_NAME'@'localhost';
SET GLOBAL max_connections = GREATEST(@@GLOBAL.max_connections, 500);
SET GLOBAL max_allowed_packet = GREATEST(@@GLOBAL.max_allowed_packet, 67108864);
FLUSH PRIVILEGES;
SQL
elif ! "${SUDO[@]}" mariadb --protocol=tcp -h "$HOST" -P "$PORT" -u"$USER_NAME" -p"$USER_PASS" \
        -e "SELECT 1" >/dev/null 2>&1; then
    log "a server answers on $HOST:$PORT but neither root (socket $SOCKET) nor $USER_NAME can log in"
    exit 1
fi

if [ "$PRINT_URL" = 1 ]; then
    echo "$BASE_URL"
fi
