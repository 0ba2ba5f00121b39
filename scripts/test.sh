#!/usr/bin/env bash
# Runs every Switchyard test on a fresh Debian/Ubuntu machine.
#
# Installs what the tests need when it is missing (the C toolchain, pkg-config
# and OpenSSL headers the build links against, ClickHouse server and client from
# the distribution, kcat, promtool from Debian's prometheus package (it checks
# the metrics exposition and the alert rules), and the Python packages pyarrow,
# duckdb and chdb that read the Parquet files and run the SQL on current
# ClickHouse, and cryptography that signs jobs as a producer outside Switchyard
# would), starts
# ClickHouse when nothing answers on its HTTP port, runs the workspace tests, and
# stops what it started. Safe to run again: each step checks before acting.
#
# Python packages go into the interpreter's site-packages when pip may write
# there, otherwise (Debian's "externally managed" system Python) into a virtual
# environment under target/test-python, which the tests are pointed at.
#
# Environment:
#   SWITCHYARD_TEST_CLICKHOUSE_URL   ClickHouse to test against (default http://127.0.0.1:8123)
#   SWITCHYARD_TEST_PYTHON           Python with pyarrow, duckdb, chdb and cryptography (found or made when unset)
#   CARGO_TEST_ARGS                  extra arguments for `cargo test` (e.g. a test name)
set -euo pipefail
cd "$(dirname "$0")/.."

export SWITCHYARD_TEST_CLICKHOUSE_URL="${SWITCHYARD_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

log() { printf '\n== %s\n' "$*" >&2; }

# --- system packages ---------------------------------------------------------
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v clickhouse-server >/dev/null 2>&1 || missing+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || missing+=(clickhouse-client)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  log "Installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# promtool comes with the Prometheus server package: installed without its
# recommends (node exporters), and its service, which Debian starts on systemd
# hosts, stopped and disabled again, since only the tool is wanted.
if ! command -v promtool >/dev/null 2>&1; then
  log "Installing prometheus (for promtool)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

# --- Python packages used by the Parquet and current-ClickHouse tests ------------
PY_PACKAGES=(pyarrow duckdb chdb cryptography)
has_packages() { "$1" -c 'import pyarrow, duckdb, chdb, cryptography' >/dev/null 2>&1; }
VENV="$PWD/target/test-python"
if [ -z "${SWITCHYARD_TEST_PYTHON:-}" ]; then
  if has_packages python3; then
    SWITCHYARD_TEST_PYTHON=python3
  elif has_packages "$VENV/bin/python"; then
    SWITCHYARD_TEST_PYTHON="$VENV/bin/python"
  else
    log "Installing ${PY_PACKAGES[*]}"
    if python3 -m pip install --quiet "${PY_PACKAGES[@]}" 2>/dev/null && has_packages python3; then
      SWITCHYARD_TEST_PYTHON=python3
    else
      # An externally managed Python (Debian 12 and later) refuses global
      # installs: use a virtual environment of our own.
      if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
      fi
      "$VENV/bin/python" -m pip install --quiet "${PY_PACKAGES[@]}"
      SWITCHYARD_TEST_PYTHON="$VENV/bin/python"
    fi
  fi
fi
has_packages "$SWITCHYARD_TEST_PYTHON" || { echo "$SWITCHYARD_TEST_PYTHON lacks ${PY_PACKAGES[*]}" >&2; exit 1; }
export SWITCHYARD_TEST_PYTHON

# --- ClickHouse ----------------------------------------------------------------
started_clickhouse=""
stop_clickhouse() {
  if [ -n "$started_clickhouse" ]; then
    log "Stopping the ClickHouse server this script started (pid $started_clickhouse)"
    kill "$started_clickhouse" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$started_clickhouse" 2>/dev/null || break; sleep 1; done
    kill -9 "$started_clickhouse" 2>/dev/null || true
  fi
}
trap stop_clickhouse EXIT

if ! curl -fsS "$SWITCHYARD_TEST_CLICKHOUSE_URL/ping" >/dev/null 2>&1; then
  log "Starting ClickHouse"
  clickhouse-server --config-file=/etc/clickhouse-server/config.xml >/tmp/switchyard-clickhouse.out 2>&1 &
  started_clickhouse=$!
  for _ in $(seq 1 60); do
    curl -fsS "$SWITCHYARD_TEST_CLICKHOUSE_URL/ping" >/dev/null 2>&1 && break
    kill -0 "$started_clickhouse" 2>/dev/null || { cat /tmp/switchyard-clickhouse.out >&2; echo "ClickHouse failed to start" >&2; exit 1; }
    sleep 1
  done
  curl -fsS "$SWITCHYARD_TEST_CLICKHOUSE_URL/ping" >/dev/null || { echo "ClickHouse did not answer on $SWITCHYARD_TEST_CLICKHOUSE_URL" >&2; exit 1; }
fi
log "ClickHouse $(curl -fsS "$SWITCHYARD_TEST_CLICKHOUSE_URL/?query=SELECT%20version()") at $SWITCHYARD_TEST_CLICKHOUSE_URL"

# --- the tests -------------------------------------------------------------------
log "cargo test --workspace"
# shellcheck disable=SC2086
cargo test --workspace --locked --no-fail-fast ${CARGO_TEST_ARGS:-}
