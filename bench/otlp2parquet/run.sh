#!/usr/bin/env bash
# weft against otlp2parquet (DESIGN.md: ingest ≥ 1.0× otlp2parquet), side by side with the same load:
# wrk posting one CRM-shaped OTLP/HTTP trace export (bench/ingest's first, 500 spans) over and over to `weft serve`
# and to `otlp2parquet` (`cargo install otlp2parquet`), each alone on the machine. Reports requests and
# spans a second that got a 2xx, the server's CPU, and its bytes on disk against the OTLP bytes it took.
# Not like for like, and both in weft's favour: weft answers after fsync, otlp2parquet before writing;
# and every request is the same payload (wrk cannot vary it), which flatters weft's dictionaries and
# index more than otlp2parquet's file per request — bench/ingest is the measure of weft itself.
#
#   bench/otlp2parquet/run.sh [duration=15s] [connections=8]   # OTLP2PARQUET=path, WEFT=path to pick builds
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-15s}
CONNECTIONS=${2:-8}
WORK=$(mktemp -d)
source bench/lib.sh
prepare
# OTLP2PARQUET=path/to/otlp2parquet, one on the PATH, or one installed into target/ once (~6 min).
O2P=${OTLP2PARQUET:-$(command -v otlp2parquet || true)}
if [ -z "$O2P" ]; then
  O2P=target/otlp2parquet/bin/otlp2parquet
  [ -x "$O2P" ] || cargo install -q --root target/otlp2parquet otlp2parquet
fi
# The first CRM trace export bench/ingest sends (500 spans, protobuf).
cargo build --release -q -p weft-bench-ingest
target/release/weft-bench-ingest --payloads 1 --write-payload "$WORK/traces.pb" 2>/dev/null
export BODY=$WORK/traces.pb
URL=http://127.0.0.1:19318/v1/traces
OTLP_BYTES=$(stat -c %s "$BODY")

# One server's row: starts it (command in "$@"), loads it, stops it, measures what it stored in $DATA.
row() {
  local name=$1 pid before requests refused accepted rps
  shift
  mkdir -p "$DATA"
  "$@" > "$WORK/$name.log" 2>&1 &
  pid=$!
  for _ in $(seq 150); do
    curl -fs -o /dev/null -H 'Content-Type: application/x-protobuf' --data-binary "@$BODY" "$URL" && break
    sleep 0.2
  done
  before=$(cpu_ticks "$pid")
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s bench/otlp2parquet/post.lua "$URL" > "$WORK/wrk.out"
  local cpu=$(( ($(cpu_ticks "$pid") - before) * 100 / $(getconf CLK_TCK) ))
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  refused=$(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.out")
  accepted=$((requests - ${refused:-0}))
  kill -TERM "$pid"; wait "$pid" || true
  awk -v n="$name" -v a="$accepted" -v r="${refused:-0}" -v d="${DURATION%s}" -v c="$cpu" \
      -v stored="$(du -sb "$DATA" | cut -f1)" -v otlp="$OTLP_BYTES" \
    'BEGIN { printf "| %s | %.0f | %.0f | %d | %.0f %% | %.3f |\n", n, a / d, a * 500 / d, r, c / d, stored / ((a + 1) * otlp) }'
}

echo "| server | requests/s (2xx) | spans/s | refused | server CPU | bytes on disk / OTLP bytes |"
echo "|---|---:|---:|---:|---:|---:|"
DATA=$WORK/weft row "weft serve (durable: acknowledged after fsync)" \
  "$WEFT" serve --data-dir "$WORK/weft" --otlp-grpc-addr 127.0.0.1:19317 --otlp-http-addr 127.0.0.1:19318 --http-addr 127.0.0.1:19687
DATA=$WORK/o2p-out row "otlp2parquet $("$O2P" --version | awk '{print $2}') (acknowledged before writing)" \
  "$O2P" -p 19318 -o "$WORK/o2p-out" -v warn
echo
echo "\`wrk -t2 -c$CONNECTIONS -d$DURATION\`, one $OTLP_BYTES-byte export of 500 spans per request; $(nproc) cores"
