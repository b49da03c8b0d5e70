#!/usr/bin/env bash
# CPU profile of sessiond under wrk load: sessiond on CPU 0 with one worker,
# wrk on CPU 1 (64 connections), `perf record` sampling the server process.
#
# Usage:
#   bench/profile.sh [cookie|header|none] [SECONDS]      # default: cookie 10
#
# Prints the hottest symbols (`perf report --no-children`) and leaves the
# raw profile in $OUT/perf.data (default: a new folder under /tmp).
#
# Needs: perf (Debian: linux-perf), wrk, taskset, curl, python3. Uses
# target/release/sessiond (built here unless BUILD_PRODUCT=0) and
# shared/bench/tokens.py for the key and the token. Traffic goes to
# 127.0.0.1 only; the server is stopped by its process id.
#
# Settings (environment): SHARED_BENCH [<repo>/../shared/bench],
# PORT [18190], CONNECTIONS [64], CALL_GRAPH [0] (1: perf -g with DWARF
# unwinding, much larger files), SESSIOND_BIN, OUT.

set -euo pipefail

SCENARIO=${1:-cookie}
SECONDS_MEASURED=${2:-10}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$REPO/../shared/bench}
TOKENS=$SHARED_BENCH/tokens.py
PORT=${PORT:-18190}
CONNECTIONS=${CONNECTIONS:-64}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/sessiond-profile.XXXXXX")}

case $SCENARIO in
  cookie | header | none) ;;
  *)
    echo "error: scenario $SCENARIO is not cookie, header or none" >&2
    exit 2
    ;;
esac
for tool in perf wrk taskset curl python3; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is not installed" >&2
    exit 2
  }
done

if [[ -z ${SESSIOND_BIN:-} ]]; then
  if [[ ${BUILD_PRODUCT:-1} == 1 ]]; then
    cargo build --release --locked --manifest-path "$REPO/Cargo.toml" >&2
  fi
  SESSIOND_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/sessiond
fi

export BENCH_SECRET_B64=${BENCH_SECRET_B64:-$(python3 "$TOKENS" secret)}
export BENCH_KID=${BENCH_KID:-bench-key-1}
TOKEN=$(python3 "$TOKENS" valid)

KEYS=$OUT/keys
mkdir -p -m 700 "$KEYS"
(
  umask 077
  python3 - "$KEYS" "$BENCH_KID" "$BENCH_SECRET_B64" <<'EOF'
import base64, json, os, sys
folder, kid, secret = sys.argv[1:4]
raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
jwk = {"kty": "oct", "kid": kid, "alg": "HS256",
       "k": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
       "created_at": "2020-01-01T00:00:00Z", "sign_from": "2020-01-01T00:00:00Z"}
tmp = os.path.join(folder, "." + kid + ".json.tmp")
with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
    json.dump(jwk, f)
os.rename(tmp, os.path.join(folder, kid + ".json"))
EOF
)

SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap stop_server EXIT

SESSIOND_BIND=127.0.0.1:$PORT SESSIOND_WORKERS=1 SESSIOND_ADMIN_BIND=127.0.0.1:0 \
  SESSIOND_KEYS_DIR=$KEYS SESSIOND_ISSUER=ccstore SESSIOND_MAX_TOKEN_LIFETIME=86400 \
  RUST_LOG=warn taskset -c 0 "$SESSIOND_BIN" 2>"$OUT/server.log" &
SERVER_PID=$!

URL=http://127.0.0.1:$PORT/ccstore/v1/metering/session
for _ in $(seq 100); do
  curl -fs -o /dev/null "$URL" && break
  sleep 0.05
done
curl -fs -o /dev/null "$URL" || {
  echo "error: sessiond did not respond on $URL; see $OUT/server.log" >&2
  exit 1
}

case $SCENARIO in
  cookie) HEADER=(-H "Cookie: session_token-store=$TOKEN") ;;
  header) HEADER=(-H "X-CC-Session-Token: $TOKEN") ;;
  none) HEADER=() ;;
esac

# Warm up, then sample the server while wrk runs.
taskset -c 1 timeout 30 wrk -t1 -c"$CONNECTIONS" -d3s "${HEADER[@]}" "$URL" >/dev/null
GRAPH=()
[[ ${CALL_GRAPH:-0} == 1 ]] && GRAPH=(-g --call-graph dwarf,16384)
perf record -q -F 1999 "${GRAPH[@]}" -o "$OUT/perf.data" -p "$SERVER_PID" \
  -- sleep "$SECONDS_MEASURED" 2>"$OUT/perf.log" &
PERF_PID=$!
taskset -c 1 timeout $((SECONDS_MEASURED + 20)) \
  wrk -t1 -c"$CONNECTIONS" -d"${SECONDS_MEASURED}s" "${HEADER[@]}" "$URL" | tee "$OUT/wrk.txt"
wait "$PERF_PID"
stop_server

perf report -i "$OUT/perf.data" --no-children --stdio --percent-limit 0.7 2>/dev/null |
  grep -v '^#' | grep -v '^$' | head -60
echo "profile: $OUT/perf.data" >&2
