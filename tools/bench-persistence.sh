#!/usr/bin/env bash
# Sustained durable messages per second, and acknowledgement latency, per persistence batch
# size, for the embedded store (SQLite) and MariaDB. Prints a markdown table.
#
# Each cell of the matrix is one fresh server (fresh data directory, or a fresh throwaway
# MariaDB database dropped afterwards) started as
#     corechat --shards 2 --batch-size N [--database URL/db] --data-dir DIR --admin off \
#              --log-level warn --listen 127.0.0.1:0
# and driven by
#     corechat-bench throughput --pairs 100 --window 16 --duration 10 --server-pid PID
# (closed loop: 100 senders, at most 16 unacknowledged messages each; the ack is the sender's
# send_message success, sent only after the message's batch has committed).
#
# Besides the bench's own figures, the script reads /proc during the measured window (from
# the bench's "run" line to its "drain" line): CPU of each server thread (the persistence
# thread, each shard, the rest) and of mariadbd, in % of one core, to show what limits the
# rate. With --metrics the server runs with its admin listener on a free port and the table
# also shows commits per second and records per commit (from /metrics).
#
# Usage: tools/bench-persistence.sh [options]
#   --stores "sqlite mariadb"   stores to measure (default both)
#   --batches "1 64 512 4096"   --batch-size values (default these four)
#   --pairs P --window K --duration S   bench load (default 100, 16, 10)
#   --shards N                  server shards (default 2)
#   --mysql-url URL             MariaDB base URL without database (default: the output of
#                               scripts/mariadb.sh --url, which also installs/starts MariaDB)
#   --metrics                   admin listener on, commits/s and records/commit columns
#   --perf                      perf record -g the server during each window (perf-*.data)
#   --build                     cargo build --release the three binaries first
#   --bin-dir DIR               take corechat and corechat-bench from DIR (default
#                               target/release; a copy keeps a shared tree's rebuilds out)
#   --out DIR                   where reports go (default bench-reports/persistence-TIMESTAMP)
#   --server-arg ARG            extra server argument (repeatable), e.g. --batch-linger-us 200
#   --no-wait-idle              do not wait, before each run, until no cargo/rustc/other
#                               corechat-bench runs and the 1-minute load is below 1.0
#                               (default: wait up to 15 minutes, for shared machines)
#
# Needs: the release binaries target/release/{corechat,corechat-bench} (see --build), and for
# MariaDB the `mariadb` client (installed by scripts/mariadb.sh) to create/drop databases.
# The machine should be otherwise idle: `uptime` is recorded with each row.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
STORES="sqlite mariadb"
BATCHES="1 64 512 4096"
PAIRS=100
WINDOW=16
DURATION=10
SHARDS=2
MYSQL_URL="${CORECHAT_MYSQL_BASE_URL:-}"
METRICS=0
PERF=0
BUILD=0
OUT=""
EXTRA=()
WAIT_IDLE=1

while [ $# -gt 0 ]; do
    case "$1" in
        --stores) STORES="$2"; shift 2 ;;
        --batches) BATCHES="$2"; shift 2 ;;
        --pairs) PAIRS="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --shards) SHARDS="$2"; shift 2 ;;
        --mysql-url) MYSQL_URL="$2"; shift 2 ;;
        --metrics) METRICS=1; shift ;;
        --perf) PERF=1; shift ;;
        --build) BUILD=1; shift ;;
        --bin-dir) BIN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --server-arg) EXTRA+=("$2"); shift 2 ;;
        --no-wait-idle) WAIT_IDLE=0; shift ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "bench-persistence.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "bench-persistence: $*" >&2; }

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p corechat-engine -p corechat-perf -p corechat-tools)
fi
for b in corechat corechat-bench; do
    [ -x "$BIN/$b" ] || { log "missing $BIN/$b (run with --build)"; exit 2; }
done

OUT="${OUT:-$ROOT/bench-reports/persistence-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
TICK=$(getconf CLK_TCK)

if [[ " $STORES " == *" mariadb "* ]]; then
    if [ -z "$MYSQL_URL" ]; then
        MYSQL_URL="$("$ROOT/scripts/mariadb.sh" --url | tail -n 1)"
    fi
    MYSQL_URL="${MYSQL_URL%/}"
    # mysql://user:pass@host:port
    rest="${MYSQL_URL#mysql://}"
    MY_USER="${rest%%:*}"; rest="${rest#*:}"
    MY_PASS="${rest%%@*}"; rest="${rest#*@}"
    MY_HOST="${rest%%:*}"; MY_PORT="${rest#*:}"
    my() { mariadb --protocol=tcp -h "$MY_HOST" -P "$MY_PORT" -u"$MY_USER" -p"$MY_PASS" -e "$1"; }
    MARIADB_PID="$(cat /run/mysqld/corechat-mariadbd.pid 2>/dev/null || pgrep -x mariadbd | head -n 1 || true)"
fi

# "tid comm ticks" for every thread of $1.
threads() {
    local pid=$1 t line comm rest
    for t in /proc/"$pid"/task/*; do
        line="$(cat "$t/stat" 2>/dev/null)" || continue
        comm="${line#*(}"; comm="${comm%)*}"; comm="${comm// /_}"
        rest="${line##*) }"
        # shellcheck disable=SC2086
        set -- $rest
        echo "${t##*/} $comm $(( ${12} + ${13} ))"
    done
}

# Total ticks of process $1.
ticks() {
    local line rest
    line="$(cat /proc/"$1"/stat 2>/dev/null)" || { echo 0; return; }
    rest="${line##*) }"
    # shellcheck disable=SC2086
    set -- $rest
    echo $(( ${12} + ${13} ))
}

# Prometheus counter $2 from the metrics text in file $1.
counter() { awk -v n="$2" '$1 == n { print $2 }' "$1" | head -n 1; }

now() { date +%s.%N; }

# Waits (up to $3 s) until file $1 has a line matching $2.
wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -q -- "$2" "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

# On a shared machine: waits until nobody compiles or benchmarks and the load has settled.
wait_idle() {
    [ "$WAIT_IDLE" = 1 ] || return 0
    local deadline=$((SECONDS + 900)) said=0
    while :; do
        local busy load1
        busy="$(pgrep -x cargo; pgrep -x rustc; pgrep -x corechat-bench)" || true
        load1="$(cut -d' ' -f1 /proc/loadavg)"
        if [ -z "$busy" ] && awk -v l="$load1" 'BEGIN { exit !(l < 1.0) }'; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "machine still busy after 15 minutes (load $load1); measuring anyway"
            return 0
        fi
        if [ "$said" = 0 ]; then log "waiting for an idle machine (load $load1)"; said=1; fi
        sleep 5
    done
}

ROWS=()
run_one() {
    local store=$1 batch=$2
    local run="$OUT/$store-$batch"
    mkdir -p "$run"
    local data db="" url=""
    data="$(mktemp -d /tmp/corechat-benchp-XXXXXX)"
    local args=(--shards "$SHARDS" --batch-size "$batch" --data-dir "$data" --log-level warn
                --listen 127.0.0.1:0)
    if [ "$store" = mariadb ]; then
        db="corechat_benchp_$$_${batch}_$RANDOM"
        my "CREATE DATABASE \`$db\`"
        url="$MYSQL_URL/$db"
        args+=(--database "$url")
    fi
    if [ "$METRICS" = 1 ]; then args+=(--admin 127.0.0.1:0); else args+=(--admin off); fi
    args+=("${EXTRA[@]}")
    wait_idle
    local load
    load="$(uptime | sed 's/.*load average: //')"
    log "$store batch $batch: load average $load"
    local cmd="corechat ${args[*]}"
    # The database password stays out of the report folder.
    [ -z "$MYSQL_URL" ] || cmd="${cmd//"$MYSQL_URL"/mysql://...}"
    echo "$cmd" >"$run/server.cmd"
    "$BIN/corechat" "${args[@]}" >"$run/server.out" 2>"$run/server.err" &
    local spid=$!
    if ! wait_for "$run/server.out" "corechat ready on" 120; then
        log "server did not start; see $run/server.err"; kill "$spid" 2>/dev/null || true
        return 1
    fi
    local ready addr admin=""
    ready="$(grep -m1 "corechat ready on" "$run/server.out")"
    addr="$(sed -E 's/.*ready on ([0-9.:]+) .*/\1/' <<<"$ready")"
    if [ "$METRICS" = 1 ]; then
        admin="$(sed -E 's#.*admin on (http://[0-9.:]+).*#\1#' <<<"$ready")"
    fi
    local persist_tid
    persist_tid="$(threads "$spid" | awk '$2 == "corechat-persis" || $2 == "corechat-persist" { print $1 }' | head -n 1)"

    "$BIN/corechat-bench" throughput --addr "$addr" --pairs "$PAIRS" --window "$WINDOW" \
        --duration "$DURATION" --server-pid "$spid" --out "$run/bench" \
        >"$run/bench.out" 2>"$run/bench.err" &
    local bpid=$!

    local t0 t1 m0 m1 s0 s1 perf_pid=""
    if wait_for "$run/bench.err" '\] run$' 300; then
        t0="$(now)"; threads "$spid" >"$run/threads.0"
        m0="$(ticks "${MARIADB_PID:-0}")"
        [ -z "$admin" ] || curl -s "$admin/metrics" >"$run/metrics.0" || true
        if [ "$PERF" = 1 ]; then
            perf record -q -g -F 499 -p "$spid" -o "$run/perf.data" -- sleep "$((DURATION > 3 ? DURATION - 2 : 1))" \
                >/dev/null 2>&1 &
            perf_pid=$!
        fi
        if wait_for "$run/bench.err" '\] drain$' $((DURATION + 60)); then
            t1="$(now)"; threads "$spid" >"$run/threads.1"
            m1="$(ticks "${MARIADB_PID:-0}")"
            [ -z "$admin" ] || curl -s "$admin/metrics" >"$run/metrics.1" || true
        fi
    fi
    local brc=0
    wait "$bpid" || brc=$?
    [ -z "$perf_pid" ] || wait "$perf_pid" || true
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" || true
    rm -rf "$data"
    if [ -n "$db" ]; then my "DROP DATABASE IF EXISTS \`$db\`" || true; fi

    local sum="$run/bench/summary.md"
    if [ ! -f "$sum" ] || [ -z "${t1:-}" ]; then
        log "$store batch $batch: no complete report (bench exit $brc); see $run"
        ROWS+=("| $store | $batch | failed | | | | | | | $load |")
        return 0
    fi
    # Rates: the line after "| sent/s | acked/s | delivered/s |" and its separator.
    local acked ack50 ack99 lost
    acked="$(awk '/^\| sent\/s \| acked\/s/ { getline; getline; split($0, f, "|"); gsub(/ /, "", f[3]); print f[3]; exit }' "$sum")"
    ack50="$(awk -F'|' '$2 ~ /^ ack $/ { gsub(/ /, "", $5); print $5; exit }' "$sum")"
    ack99="$(awk -F'|' '$2 ~ /^ ack $/ { gsub(/ /, "", $7); print $7; exit }' "$sum")"
    lost="$(awk '/^\| sent \| acked \| refused/ { getline; getline; split($0, f, "|"); gsub(/ /, "", f[6]); print f[6]; exit }' "$sum")"
    # CPU in % of one core over the window, per thread group.
    local dt cpu
    dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    join -j 1 <(sort "$run/threads.0") <(sort "$run/threads.1") | awk -v dt="$dt" -v tick="$TICK" -v ptid="$persist_tid" '
        { d = ($5 - $3) / tick / dt * 100
          if ($1 == ptid) print "persist", $1, d
          else if ($2 ~ /^corechat-shard/) print "shard", $1, d
          else print "other", $1, d }' >"$run/threads.cpu"
    local persist shards other mdb="-"
    persist="$(awk '$1 == "persist" { s += $3 } END { printf "%.0f", s }' "$run/threads.cpu")"
    other="$(awk '$1 == "other" { s += $3 } END { printf "%.0f", s }' "$run/threads.cpu")"
    # glommio names its helper threads after the executor too: the executors are the $SHARDS
    # busiest "corechat-shard-" threads, shown in creation order (lowest thread id first).
    shards="$(awk '$1 == "shard" { printf "%d %.0f\n", $2, $3 }' "$run/threads.cpu" | sort -k2,2nr | head -n "$SHARDS" | sort -n | awk '{ printf "%s%s", (NR > 1 ? " / " : ""), $2 }')"
    if [ "$store" = mariadb ] && [ -n "${MARIADB_PID:-}" ]; then
        mdb="$(awk -v d="$((m1 - m0))" -v t="$TICK" -v dt="$dt" 'BEGIN { printf "%.0f", d / t / dt * 100 }')"
    fi
    local extra=""
    if [ "$METRICS" = 1 ] && [ -s "$run/metrics.0" ] && [ -s "$run/metrics.1" ]; then
        local b0 b1 r0 r1
        b0="$(counter "$run/metrics.0" corechat_persist_batches_total)"; b1="$(counter "$run/metrics.1" corechat_persist_batches_total)"
        r0="$(counter "$run/metrics.0" corechat_persist_records_total)"; r1="$(counter "$run/metrics.1" corechat_persist_records_total)"
        extra="$(awk -v b="$((b1 - b0))" -v r="$((r1 - r0))" -v dt="$dt" 'BEGIN { printf " %.0f | %.0f |", b / dt, (b > 0 ? r / b : 0) }')"
    fi
    ROWS+=("| $store | $batch | $acked | $ack50 | $ack99 | $lost | $persist | $shards | $other | $mdb |$extra $load |")
    log "$store batch $batch: $(head -n 1 "$run/bench.out")"
}

for store in $STORES; do
    for batch in $BATCHES; do
        run_one "$store" "$batch"
    done
done

{
    echo
    echo "$(date '+%Y-%m-%d %H:%M %Z'), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -n 1)), $PAIRS pairs, window $WINDOW, $DURATION s, $SHARDS shards; CPU in % of one core over the measured window; reports in $OUT"
    echo
    if [ "$METRICS" = 1 ]; then
        echo "| store | batch size | durable msg/s | ack p50 ms | ack p99 ms | lost | persist thread % | shard % | other server threads % | mariadbd % | commits/s | records/commit | load avg before |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    else
        echo "| store | batch size | durable msg/s | ack p50 ms | ack p99 ms | lost | persist thread % | shard % | other server threads % | mariadbd % | load avg before |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    fi
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/table.md"
