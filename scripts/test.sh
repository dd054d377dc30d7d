#!/usr/bin/env bash
# Runs every test of corechat: formatting, lints, unit tests, integration tests against the
# real server, and the MySQL backend tests against a real MariaDB.
#
# On a fresh Debian machine with only the Rust toolchain this installs and starts what the
# tests need (MariaDB on 127.0.0.1, via scripts/mariadb.sh), idempotently. Nothing listens
# beyond loopback.
#
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== MariaDB for the database tests"
CORECHAT_TEST_MYSQL_URL="$(scripts/mariadb.sh --url | tail -n 1)"
export CORECHAT_TEST_MYSQL_URL
echo "   $CORECHAT_TEST_MYSQL_URL" | sed 's#://\([^:]*\):[^@]*@#://\1:***@#'

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
# The server binary must exist before the perf crate's tests start it.
cargo build --workspace --bins
cargo test --workspace "$@"
