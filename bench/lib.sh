# Shared by the proxy benchmarks (bench/gateway, bench/mesh); sourced from
# the repository root after DURATION, CONNECTIONS and WORK are set. It stops
# everything the script started, and nginx, on exit.
trap 'kill $(jobs -p) 2>/dev/null; wait; nginx -p "$WORK" -c "$WORK/nginx.conf" -s stop 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Installs nginx, wrk and openssl if missing, and sets WEFT to a release build
# (unless WEFT=path/to/weft names another build to measure).
prepare() {
  if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v openssl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk openssl >/dev/null
  fi
  if [ -z "${WEFT:-}" ]; then
    cargo build --release --bin weft -q
    WEFT=target/release/weft
  fi
}

# Waits up to 30 s for a URL to answer 2xx.
wait_for() {
  for _ in $(seq 150); do curl -fs -o /dev/null "$1" && return 0; sleep 0.2; done
  echo "not answering: $1" >&2; exit 1
}

# Three seconds of the same load on a port, not measured; further arguments
# go to wrk.
warm_up() {
  local port=$1
  shift
  wrk -t2 -c"$CONNECTIONS" -d3s "$@" "http://127.0.0.1:$port/" >/dev/null
}

# Requests/s, p50 and p99 (as wrk prints them) and errors of one wrk run on a
# port; further arguments go to wrk.
measure() {
  local port=$1
  shift
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "http://127.0.0.1:$port/" > "$WORK/wrk.out"
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.out")
  p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.out" | tr '\n' ' ')
  echo "$rps|$p50|$p99|${errors:-none}"
}

# measure, at a fixed offered load instead of as fast as the proxy answers:
# each connection waits CONNECTIONS × 1000 / rate ms after each answer (wrk's
# `delay`), so a port is offered a little under `rate` requests/s; what it
# served is in the result. Latency compared at one load is what a proxy adds;
# at full load it is mostly queueing behind the slower proxy's throughput.
measure_at_rate() {
  local port=$1 rate=$2
  awk -v c="$CONNECTIONS" -v r="$rate" 'BEGIN { printf "function delay() return %.3f end\n", c * 1000 / r }' \
    > "$WORK/rate.lua"
  warm_up "$port" -s "$WORK/rate.lua"
  measure "$port" -s "$WORK/rate.lua"
}

# CPU time (user + system) of one process so far, in clock ticks.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$1/stat"
}

# measure, followed by the CPU time each of the given processes spent per
# request over the run, in µs: "rps|p50|p99|errors|cpu1 cpu2 …". On a machine
# whose cores the load tool, the upstream and the collector share, this is
# steadier than requests/s for comparing two builds.
measure_with_cpu() {
  local port=$1 pid before=() result requests hz cpu="" i=0
  shift
  for pid in "$@"; do before+=("$(cpu_ticks "$pid")"); done
  result=$(measure "$port")
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.out")
  hz=$(getconf CLK_TCK)
  for pid in "$@"; do
    cpu+=$(awk -v a="${before[$i]}" -v b="$(cpu_ticks "$pid")" -v n="$requests" -v hz="$hz" \
      'BEGIN { printf "%.1f ", (b - a) * 1e6 / hz / n }')
    i=$((i + 1))
  done
  echo "$result|${cpu% }"
}

# wrk prints 1.23ms, 850.00us or 1.20s; this prints milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else printf "%.3f", v*1000 }'
}

# One Markdown row: name|rps|p50|p99|errors, with the ratio to a baseline rps.
row() {
  local name rps p50 p99 err
  IFS='|' read -r name rps p50 p99 err <<<"$1"
  printf "| %s | %.0f | %.2f | %s | %s | %s |\n" "$name" "$rps" "$(awk -v a="$rps" -v b="$2" 'BEGIN{print a/b}')" \
    "$(to_ms "$p50")" "$(to_ms "$p99")" "$err"
}
