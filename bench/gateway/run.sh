#!/usr/bin/env bash
# Gateway throughput and latency, side by side in one run: nginx (Debian's
# package) as a plain reverse proxy, `weft gateway` without telemetry, and
# `weft gateway` tracing 100% of requests (SERVER + CLIENT span and an access
# log each) into a real `weft serve` on the same machine. Same upstream (an
# nginx server answering a fixed 2-byte body), same load tool (wrk), same
# connections. Prints a Markdown table for BENCHMARKS.md.
#
# Then the two gateways once more at one fixed load (`rate` requests/s offered
# to each), for the latency tracing adds at the same load.
#
#   bench/gateway/run.sh [duration=20s] [connections=64] [rate=10000]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-20s}
CONNECTIONS=${2:-64}
RATE=${3:-10000}
WORK=$(mktemp -d)
source bench/lib.sh
prepare

UPSTREAM=18080 NGINX=18000 GATEWAY=18100 GATEWAY_TRACED=18200 GATEWAY_NO_COLLECTOR=18300
cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$UPSTREAM; keepalive 128; }
  server { listen 127.0.0.1:$UPSTREAM; location / { return 200 "ok"; } }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF
mkdir -p "$WORK/logs"
nginx -p "$WORK" -c "$WORK/nginx.conf"

cat > "$WORK/gateway.yaml" <<CONF
services:
  - name: crm-mobile
    url: http://127.0.0.1:$UPSTREAM
    routes: [{name: all, paths: [/]}]
CONF
$WEFT serve --data-dir "$WORK/weft-data" --otlp-grpc-addr 127.0.0.1:14317 --otlp-http-addr 127.0.0.1:14318 \
  --http-addr 127.0.0.1:16687 2>"$WORK/weft.log" &
SERVE_PID=$!
$WEFT gateway --config "$WORK/gateway.yaml" --proxy-addr 127.0.0.1:$GATEWAY --admin-addr 127.0.0.1:18101 \
  2>"$WORK/gateway.log" &
GATEWAY_PID=$!
$WEFT gateway --config "$WORK/gateway.yaml" --proxy-addr 127.0.0.1:$GATEWAY_TRACED --admin-addr 127.0.0.1:18201 \
  --otlp-endpoint http://127.0.0.1:14317 2>"$WORK/gateway-traced.log" &
TRACED_PID=$!
# Traces every request too, but its collector's port is closed: the spans and
# access logs are built, fail to export and are dropped (counted), so this row
# is the gateway's own cost of tracing without a collector storing 30k records/s
# on the same cores — as where the collector runs on other machines.
$WEFT gateway --config "$WORK/gateway.yaml" --proxy-addr 127.0.0.1:$GATEWAY_NO_COLLECTOR --admin-addr 127.0.0.1:18301 \
  --otlp-endpoint http://127.0.0.1:14399 2>"$WORK/gateway-no-collector.log" &
wait_for http://127.0.0.1:16687/api/v1/services
for port in $NGINX $GATEWAY $GATEWAY_TRACED $GATEWAY_NO_COLLECTOR; do wait_for "http://127.0.0.1:$port/"; done

# Each row warms up right before it is measured, so the telemetry of the traced
# row's warm-up is not still being stored while another row runs.
warm_up $NGINX
IFS='|' read -r n_rps n_p50 n_p99 n_err <<<"$(measure $NGINX)"
warm_up $GATEWAY
IFS='|' read -r g_rps g_p50 g_p99 g_err g_cpu <<<"$(measure_with_cpu $GATEWAY $GATEWAY_PID)"
# The same fixed load through both gateways, before the traced one's full-load
# run leaves its collector a backlog to store.
IFS='|' read -r gr_rps gr_p50 gr_p99 gr_err <<<"$(measure_at_rate $GATEWAY "$RATE")"
IFS='|' read -r tr_rps tr_p50 tr_p99 tr_err <<<"$(measure_at_rate $GATEWAY_TRACED "$RATE")"
IFS='|' read -r tn_rps tn_p50 tn_p99 tn_err <<<"$(measure_at_rate $GATEWAY_NO_COLLECTOR "$RATE")"
warm_up $GATEWAY_TRACED
IFS='|' read -r t_rps t_p50 t_p99 t_err t_cpu <<<"$(measure_with_cpu $GATEWAY_TRACED $TRACED_PID $SERVE_PID)"
sleep 2
exported=$(curl -s http://127.0.0.1:18201/status)

echo "| proxy | requests/s | × nginx | p50 ms | p99 ms | errors |"
echo "|---|---:|---:|---:|---:|---|"
for r in "nginx (proxy_pass, upstream keepalive)|$n_rps|$n_p50|$n_p99|$n_err" \
           "weft gateway, telemetry off|$g_rps|$g_p50|$g_p99|$g_err" \
           "weft gateway, 100% traced + access logs into weft serve|$t_rps|$t_p50|$t_p99|$t_err"; do
  row "$r" "$n_rps"
done
echo
echo "p99 added by tracing at full load (traced − untraced gateway): $(awk -v a="$(to_ms "$t_p99")" -v b="$(to_ms "$g_p99")" 'BEGIN{printf "%.3f", a-b}') ms"
echo
echo "At a fixed load of $RATE requests/s offered to each:"
echo
echo "| gateway | requests/s | p50 ms | p99 ms | errors |"
echo "|---|---:|---:|---:|---|"
echo "| telemetry off | $gr_rps | $(to_ms "$gr_p50") | $(to_ms "$gr_p99") | $gr_err |"
echo "| 100% traced + access logs into weft serve | $tr_rps | $(to_ms "$tr_p50") | $(to_ms "$tr_p99") | $tr_err |"
echo "| 100% traced + access logs, no collector on these cores (dropped) | $tn_rps | $(to_ms "$tn_p50") | $(to_ms "$tn_p99") | $tn_err |"
echo
added() { awk -v a="$(to_ms "$1")" -v b="$(to_ms "$gr_p99")" 'BEGIN{printf "%.3f", a-b}'; }
echo "p99 added by tracing at $RATE requests/s: $(added "$tr_p99") ms with weft serve on the same cores, $(added "$tn_p99") ms without"
echo "CPU per request (user + system, µs): gateway, telemetry off $g_cpu; traced gateway ${t_cpu% *} + weft serve storing its telemetry ${t_cpu#* }"
echo "traced gateway telemetry: $exported"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION; $(nproc) cores; $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1)"
