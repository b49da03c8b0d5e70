#!/usr/bin/env bash
# Load benchmark of sessiond against the bare actix-web ceiling and the
# fastify peer, in one run of shared/bench/compare.sh.
#
# Usage (from anywhere):
#   bench/load.sh                          # ceiling, fastify, sessiond
#   bench/load.sh product                  # sessiond only
#   CONNECTIONS=256 DURATION=5 bench/load.sh ceiling product   # peak RSS
#   ROUNDS=3 bench/load.sh                 # medians of 3 interleaved rounds
#
# Builds sessiond in release and writes the bench key (BENCH_SECRET_B64
# under BENCH_KID, a fresh one unless set) as a JWK file of mode 0600 into
# a temporary keys folder. compare.sh then gets a PRODUCT_CMD that starts
# sessiond on the address and with the worker count it is given.
# Every other setting of compare.sh (DURATION, WARMUP, ROUNDS, SCENARIOS,
# PIN, CONNECTIONS, RESULTS_DIR, ...) passes through; `compare.sh --help`
# lists them. Traffic goes to 127.0.0.1 only.
#
# Needs: cargo, python3, curl, taskset, wrk (Debian: apt-get install -y wrk),
# node and npm for the fastify peer.
#
# Settings (environment; defaults in brackets):
#   SHARED_BENCH [<repo>/../shared/bench]  folder of compare.sh and tokens.py
#   BUILD_PRODUCT [1]  0: use the existing target/release/sessiond
#   SESSIOND_BIN       run this binary instead of building one
#   BENCH_BUILD_DIR [~/.cache/ccstore-bench]  where compare.sh builds the
#                      peers and writes results, so shared/ stays as it is
#   EXTRA_BINARIES     "NAME=PATH ..." other sessiond builds to run in the
#                      same comparison with the same settings, for example
#                      an earlier commit's binary

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$REPO/../shared/bench}
COMPARE=$SHARED_BENCH/compare.sh
TOKENS=$SHARED_BENCH/tokens.py

if [[ ! -x $COMPARE || ! -f $TOKENS ]]; then
  echo "error: compare.sh or tokens.py not found in $SHARED_BENCH;" \
    "set SHARED_BENCH to the folder that contains them" >&2
  exit 2
fi

if [[ -n ${SESSIOND_BIN:-} ]]; then
  BIN=$SESSIOND_BIN
else
  if [[ ${BUILD_PRODUCT:-1} == 1 ]]; then
    echo "== building sessiond (release)" >&2
    cargo build --release --locked --manifest-path "$REPO/Cargo.toml" >&2
  fi
  BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/sessiond
fi
if [[ ! -x $BIN ]]; then
  echo "error: $BIN is not an executable; build it or set SESSIOND_BIN" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

if [[ -z ${BENCH_SECRET_B64:-} ]]; then
  BENCH_SECRET_B64=$(python3 "$TOKENS" secret)
fi
BENCH_KID=${BENCH_KID:-bench-key-1}
if [[ ! $BENCH_KID =~ ^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$ ]]; then
  echo "error: BENCH_KID=$BENCH_KID is not a valid kid (1 to 64 of A-Z a-z 0-9 . _ -)" >&2
  exit 2
fi
export BENCH_SECRET_B64 BENCH_KID
export BENCH_BUILD_DIR=${BENCH_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ccstore-bench}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sessiond-load.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
KEYS=$WORK/keys
mkdir -m 700 "$KEYS"

# The key file: a JWK of mode 0600 that signs from a fixed past instant.
python3 "$REPO/bench/benchkey.py" "$KEYS" "$BENCH_KID" "$BENCH_SECRET_B64"

# tokens.py mints with iss "ccstore" and a lifetime of 86400 s. The admin
# listener takes a free loopback port. RUST_LOG=warn keeps start-up quiet.
SESSIOND_ENV="SESSIOND_BIND=\"\$BIND\" SESSIOND_WORKERS=\"\$WORKERS\""
SESSIOND_ENV+=" SESSIOND_ADMIN_BIND=127.0.0.1:0 SESSIOND_KEYS_DIR=$(printf %q "$KEYS")"
SESSIOND_ENV+=" SESSIOND_ISSUER=ccstore SESSIOND_TOKEN_TTL=3600"
SESSIOND_ENV+=" SESSIOND_MAX_TOKEN_LIFETIME=86400 RUST_LOG=\${RUST_LOG:-warn}"
export PRODUCT_CMD="$SESSIOND_ENV exec $(printf %q "$BIN")"

SERVERS=("$@")
if [[ ${#SERVERS[@]} -eq 0 ]]; then
  SERVERS=(ceiling fastify product)
fi
for extra in ${EXTRA_BINARIES:-}; do
  name=${extra%%=*}
  path=${extra#*=}
  if [[ $name == "$extra" || ! -x $path ]]; then
    echo "error: EXTRA_BINARIES entry $extra is not NAME=PATH of an executable" >&2
    exit 2
  fi
  path=$(cd "$(dirname "$path")" && pwd)/$(basename "$path")
  SERVERS+=("$name=$SESSIOND_ENV exec $(printf %q "$path")")
done

echo "== sessiond: $BIN" >&2
echo "== keys: $KEYS (kid $BENCH_KID)" >&2
# compare.sh runs each server command in its own working directory; the
# temporary folder has no .env that sessiond could pick up.
cd "$WORK"
"$COMPARE" "${SERVERS[@]}"
