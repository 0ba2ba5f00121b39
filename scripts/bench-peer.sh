#!/usr/bin/env bash
# Peer benchmark: Switchyard's worker against LiteLLM's Router, in one run, on the
# same zero-latency OpenAI-compatible mock (issue 19).
#
#   bash scripts/bench-peer.sh                       # build, install LiteLLM, measure everything
#   bash scripts/bench-peer.sh --binary target/release/switchyard --requests 30000
#   bash scripts/bench-peer.sh --switchyard-only --requests 50     # what the test runs
#
# What it does:
#   * builds `switchyard` (cargo build --release), unless --binary gives one;
#   * installs LiteLLM (pinned, --litellm-version) from PyPI into a virtual
#     environment under target/bench-peer/ (once; skipped with --switchyard-only),
#     and kcat from Debian when it is missing;
#   * starts the mock, `switchyard sim-provider` with scripts/bench-peer/mock.toml
#     (every answer at once, no injected faults; model id `mock-down` answers 500);
#   * where the machine has two CPUs or more: mock, broker, kcat and the drivers on
#     the first CPU, the system under test on the second (taskset);
#   * Switchyard, per mode, on a fresh `switchyard broker`: `switchyard run` with
#     two deployments of one catalog model on the mock and defaults otherwise;
#     W warm-up jobs, then N jobs produced with kcat; CPU of the worker process
#     (/proc/PID/stat) from just before the N jobs are produced to the moment the
#     N-th result is read (scripts/bench-peer/switchyard_side.py);
#   * LiteLLM, per mode: an in-process Router (two deployments of one model group on
#     the mock, simple-shuffle, num_retries=1, one fallback group, timeout=30,
#     callbacks, logging and telemetry off) driven by `acompletion` at concurrency
#     64; CPU of that Python process (scripts/bench-peer/litellm_side.py);
#   * modes: `healthy` (both deployments answer) and `failover` (one of the two
#     answers HTTP 500 to every request);
#   * prints a table and writes a JSON array, one object per system and mode
#     (system, mode, requests, cpu_s_per_1k, throughput_per_s, p50_ms, p99_ms,
#     success, then details), to --out (default target/bench-peer/peer.json; the
#     table goes next to it as .txt). Logs of the last run: target/bench-peer/run/.
#
# Every process it starts is stopped on exit, however it exits. Safe to run again.
set -eEuo pipefail
INTERRUPTED=""
trap '[ -n "$INTERRUPTED" ] || printf "bench-peer: error: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/scripts/bench-peer"
cd "$ROOT"
export PYTHONDONTWRITEBYTECODE=1

REQUESTS=20000
LITELLM_REQUESTS=5000
WARMUP=""
CONCURRENCY=64
SWITCHYARD_ONLY=0
BINARY=""
OUT="$ROOT/target/bench-peer/peer.json"
RUN=""
LOGS_GIVEN=""
LITELLM_VERSION="1.110.2"
MODES="healthy,failover"
ORIGINAL_ARGS=("$@")

usage() {
  cat <<EOF
Usage: bash scripts/bench-peer.sh [OPTIONS]

  --requests N           Switchyard jobs measured per mode (default $REQUESTS)
  --litellm-requests N   LiteLLM requests measured per mode (default $LITELLM_REQUESTS: LiteLLM
                         spends tens of times more CPU per request, so fewer give as stable a figure)
  --warmup N             warm-up requests before each measurement (default: 1000 for Switchyard,
                         200 for LiteLLM, at most the measured count)
  --concurrency N        LiteLLM calls in flight (default $CONCURRENCY)
  --modes LIST           healthy,failover (default both)
  --switchyard-only      measure Switchyard only (no Python packages installed)
  --binary PATH          use this switchyard binary instead of cargo build --release
  --litellm-version V    LiteLLM version installed from PyPI (default $LITELLM_VERSION)
  --out PATH             JSON output (default target/bench-peer/peer.json)
  --logs DIR             configs, job files and logs of this run, emptied first
                         (default target/bench-peer/run)
  -h, --help             this help
EOF
}

die() { printf '\nbench-peer: error: %s\n' "$*" >&2; exit 1; }
log() { printf '== %s\n' "$*" >&2; }
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive integer, not '$2'"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --requests) positive "$1" "${2:-}"; REQUESTS="$2"; shift 2 ;;
    --litellm-requests) positive "$1" "${2:-}"; LITELLM_REQUESTS="$2"; shift 2 ;;
    --warmup) positive "$1" "${2:-}"; WARMUP="$2"; shift 2 ;;
    --concurrency) positive "$1" "${2:-}"; CONCURRENCY="$2"; shift 2 ;;
    --modes) MODES="${2:-}"; shift 2 ;;
    --switchyard-only) SWITCHYARD_ONLY=1; shift ;;
    --binary) BINARY="${2:-}"; [ -n "$BINARY" ] || die "--binary needs a path"; shift 2 ;;
    --litellm-version) LITELLM_VERSION="${2:-}"; [ -n "$LITELLM_VERSION" ] || die "--litellm-version needs a version"; shift 2 ;;
    --out) OUT="${2:-}"; [ -n "$OUT" ] || die "--out needs a path"; shift 2 ;;
    --logs) RUN="${2:-}"; LOGS_GIVEN=1; [ -n "$RUN" ] || die "--logs needs a directory"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
IFS=',' read -r -a MODE_LIST <<<"$MODES"
[ "${#MODE_LIST[@]}" -gt 0 ] || die "--modes is empty"
for m in "${MODE_LIST[@]}"; do
  case "$m" in healthy|failover) ;; *) die "unknown mode '$m' (healthy, failover)" ;; esac
done
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac

WORK="$ROOT/target/bench-peer"
RUN="${RUN:-$WORK/run}"
case "$RUN" in /*) ;; *) RUN="$PWD/$RUN" ;; esac
CORPUS="$ROOT/pipelines/corpus/prompts.jsonl"
CATALOG="$ROOT/pipelines/models.toml"
ORG="$ROOT/pipelines/org.toml"
for f in "$CORPUS" "$CATALOG" "$ORG" "$HERE/mock.toml" "$HERE/common.py"; do
  [ -f "$f" ] || die "missing $f"
done

# --- cleanup: every process this script started, by its id --------------------
PIDS=()          # mock, brokers: stopped last
DRIVER_PID=""    # the Python side running now
cleanup() {
  local status=$?
  set +e
  trap - ERR
  [ -z "$INTERRUPTED" ] || printf '\nbench-peer: %s received: stopping every process it started\n' "$INTERRUPTED" >&2
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DRIVER_PID" 2>/dev/null
  fi
  # What the Switchyard driver started, if it could not stop it itself (the worker
  # first: without a broker it cannot finish its shutdown). Each line: PID EXE;
  # a PID is signalled only while it still runs that executable (or taskset).
  if [ -f "$RUN/switchyard-side.pids" ]; then
    local pid exe now
    while read -r pid exe; do
      now="$(readlink -f "/proc/$pid/exe" 2>/dev/null)" || continue
      [ "$now" = "$exe" ] || [ "$(basename "$now")" = taskset ] || continue
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    done <"$RUN/switchyard-side.pids"
    rm -f "$RUN/switchyard-side.pids"
  fi
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[$i]}"
  done
  PIDS=()
  exit "$status"
}
trap cleanup EXIT
trap 'INTERRUPTED=SIGINT; exit 130' INT
trap 'INTERRUPTED=SIGTERM; exit 143' TERM

stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

forget_pid() {
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]+"${keep[@]}"}")
}

# Waits for a line starting with PREFIX in FILE, written by process PID; prints
# what follows the prefix.
await_line() {
  local pid="$1" file="$2" prefix="$3" what="$4" value
  for _ in $(seq 1 300); do
    value="$(sed -n "s|^${prefix}||p" "$file" 2>/dev/null | head -n1)"
    if [ -n "$value" ]; then printf '%s' "$value"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$file" "${file%.out}.err" >&2 2>/dev/null; die "$what exited before it was ready (log above)"; }
    sleep 0.1
  done
  die "$what printed no '$prefix' within 30 s (see $file)"
}

# --- tools -----------------------------------------------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* missing and no apt-get to install it: install $* first"
  log "Installing $* (apt)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v python3 >/dev/null 2>&1 || apt_install python3
command -v kcat >/dev/null 2>&1 || apt_install kcat
command -v kcat >/dev/null 2>&1 || die "kcat is required (Debian package kcat)"
command -v taskset >/dev/null 2>&1 || apt_install util-linux

# --- CPUs: mock, broker and drivers on one, the system under test on another ------
read -r AUX_CPU SUT_CPU <<<"$(python3 -c 'import os; c = sorted(os.sched_getaffinity(0)); print(c[0], c[1]) if len(c) > 1 else print("", "")')" || true
if [ -n "${SUT_CPU:-}" ]; then
  PIN_AUX=(taskset -c "$AUX_CPU")
  PIN_SUT=(taskset -c "$SUT_CPU")
  PINNING="Pinning: mock, broker, kcat and drivers on CPU $AUX_CPU; system under test on CPU $SUT_CPU"
else
  AUX_CPU="" SUT_CPU=""
  PIN_AUX=() PIN_SUT=()
  PINNING="Pinning: none (one CPU available): everything shares it"
fi
log "$PINNING"

# --- switchyard ------------------------------------------------------------------
if [ -n "$BINARY" ]; then
  case "$BINARY" in /*) ;; *) BINARY="$PWD/$BINARY" ;; esac
  [ -x "$BINARY" ] || die "--binary $BINARY is not an executable file"
else
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust, or pass --binary PATH"
  log "cargo build --release"
  cargo build --release --locked --bin switchyard >&2 || die "cargo build --release failed"
  BINARY="$ROOT/target/release/switchyard"
fi
SWITCHYARD_VERSION="$("$BINARY" --version 2>/dev/null | head -n1)" || die "$BINARY --version failed"
if [ "$BINARY" = "$ROOT/target/release/switchyard" ] && COMMIT="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; then
  git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT, with uncommitted changes"
  SWITCHYARD_VERSION="$SWITCHYARD_VERSION (commit $COMMIT)"
fi

# --- LiteLLM ----------------------------------------------------------------------
VENV="$WORK/venv-litellm-$LITELLM_VERSION"
if [ "$SWITCHYARD_ONLY" -eq 0 ]; then
  has_litellm() {
    "$VENV/bin/python" - "$LITELLM_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
sys.exit(0 if version("litellm") == sys.argv[1] else 1)
EOF
  }
  if ! has_litellm; then
    log "Installing litellm==$LITELLM_VERSION into $VENV"
    mkdir -p "$WORK"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv "$VENV" || die "could not create a virtual environment at $VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "litellm==$LITELLM_VERSION" >&2 \
      || die "pip could not install litellm==$LITELLM_VERSION (is PyPI reachable? does that version exist?)"
    has_litellm || die "litellm $LITELLM_VERSION is not importable from $VENV"
  fi
fi

# --- the run ---------------------------------------------------------------------
# Emptied first; a --logs directory only if this script made it (its marker file).
if [ -n "$LOGS_GIVEN" ] && [ -d "$RUN" ] && [ -n "$(ls -A "$RUN")" ] && [ ! -f "$RUN/.bench-peer-run" ]; then
  die "--logs $RUN is not empty and was not made by this script: give a new or empty directory"
fi
rm -rf "${RUN:?}"
mkdir -p "$RUN"
: >"$RUN/.bench-peer-run"
log "Logs: $RUN"

${PIN_AUX[@]+"${PIN_AUX[@]}"} "$BINARY" sim-provider --config "$HERE/mock.toml" --host 127.0.0.1 --port 0 \
  >"$RUN/mock.out" 2>"$RUN/mock.err" &
MOCK_PID=$!
PIDS+=("$MOCK_PID")
MOCK_URL="$(await_line "$MOCK_PID" "$RUN/mock.out" "sim-provider: " "the mock (switchyard sim-provider)")"
log "Mock at $MOCK_URL"

PARTS=()
for mode in "${MODE_LIST[@]}"; do
  log "Switchyard, $mode: $REQUESTS jobs"
  ${PIN_AUX[@]+"${PIN_AUX[@]}"} "$BINARY" broker >"$RUN/broker-$mode.out" 2>"$RUN/broker-$mode.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  BROKERS="$(await_line "$BROKER_PID" "$RUN/broker-$mode.out" "bootstrap: " "switchyard broker")"
  ${PIN_AUX[@]+"${PIN_AUX[@]}"} python3 "$HERE/switchyard_side.py" \
    --binary "$BINARY" --brokers "$BROKERS" --mock-url "$MOCK_URL" --mode "$mode" \
    --requests "$REQUESTS" ${WARMUP:+--warmup "$WARMUP"} \
    --corpus "$CORPUS" --catalog "$CATALOG" --org "$ORG" \
    --workdir "$RUN" --worker-cpu "$SUT_CPU" --aux-cpu "$AUX_CPU" \
    --out "$RUN/switchyard-$mode.json" &
  DRIVER_PID=$!
  wait "$DRIVER_PID" || die "the Switchyard $mode run failed (logs in $RUN)"
  DRIVER_PID=""
  stop_pid "$BROKER_PID"
  forget_pid "$BROKER_PID"
  PARTS+=("$RUN/switchyard-$mode.json")
done

if [ "$SWITCHYARD_ONLY" -eq 0 ]; then
  for mode in "${MODE_LIST[@]}"; do
    log "LiteLLM $LITELLM_VERSION, $mode: $LITELLM_REQUESTS requests at concurrency $CONCURRENCY"
    ${PIN_SUT[@]+"${PIN_SUT[@]}"} "$VENV/bin/python" "$HERE/litellm_side.py" \
      --mock-url "$MOCK_URL" --mode "$mode" --requests "$LITELLM_REQUESTS" \
      ${WARMUP:+--warmup "$WARMUP"} --concurrency "$CONCURRENCY" --corpus "$CORPUS" \
      --out "$RUN/litellm-$mode.json" 2>"$RUN/litellm-$mode.err" &
    DRIVER_PID=$!
    wait "$DRIVER_PID" || { tail -n 20 "$RUN/litellm-$mode.err" >&2; die "the LiteLLM $mode run failed (log: $RUN/litellm-$mode.err)"; }
    DRIVER_PID=""
    PARTS+=("$RUN/litellm-$mode.json")
  done
fi

echo
python3 "$HERE/report.py" --out "$OUT" --pinning "$PINNING" \
  --switchyard-version "$SWITCHYARD_VERSION" \
  --command "bash scripts/bench-peer.sh${ORIGINAL_ARGS[*]:+ ${ORIGINAL_ARGS[*]}}" \
  "${PARTS[@]}"
