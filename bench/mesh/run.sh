#!/usr/bin/env bash
# One mesh hop, side by side in one run: app → proxy → mTLS → proxy → app.
#   - nginx pair (Debian's nginx): the first proxies plain HTTP to the second
#     over TLS with a client certificate (upstream keepalive, verification on
#     both sides), the second to the app.
#   - weft pair: `weft mesh sidecar` (outbound) → mTLS with SPIFFE ids →
#     `weft mesh sidecar` (inbound) → the app, 100% traced with access logs into
#     a real `weft serve`, policies from a real control plane.
# Same app (an nginx server answering a fixed 2-byte body), same load tool
# (wrk), same connections. Prints a Markdown table for BENCHMARKS.md.
#
#   bench/mesh/run.sh [duration=20s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${1:-20s}
CONNECTIONS=${2:-64}
WORK=$(mktemp -d)
source bench/lib.sh
prepare

APP=19080 NGINX_OUT=19000 NGINX_IN=19443 SIDECAR_OUT=19100 SIDECAR_IN=19101 CP=19681

# The nginx pair's PKI: a CA, a server certificate for 127.0.0.1, a client certificate (P-256, as weft's).
cd "$WORK"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key
openssl req -x509 -new -key ca.key -subj "/CN=bench CA" -days 2 -out ca.pem 2>/dev/null
for who in server client; do
  openssl ecparam -name prime256v1 -genkey -noout -out $who.key
  openssl req -new -key $who.key -subj "/CN=$who" -out $who.csr 2>/dev/null
  printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n" > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $who.ext -out $who.pem 2>/dev/null
done
cd - >/dev/null

cat > "$WORK/nginx.conf" <<CONF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:$APP; location / { return 200 "ok"; } }
  upstream app { server 127.0.0.1:$APP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_IN ssl;
    ssl_certificate $WORK/server.pem; ssl_certificate_key $WORK/server.key;
    ssl_client_certificate $WORK/ca.pem; ssl_verify_client on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  upstream peer { server 127.0.0.1:$NGINX_IN; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_OUT;
    location / {
      proxy_pass https://peer;
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $WORK/client.pem; proxy_ssl_certificate_key $WORK/client.key;
      proxy_ssl_trusted_certificate $WORK/ca.pem; proxy_ssl_verify on; proxy_ssl_name localhost;  # nginx checks names, not IP SANs
      proxy_ssl_session_reuse on;
    }
  }
}
CONF
mkdir -p "$WORK/logs"
nginx -p "$WORK" -c "$WORK/nginx.conf"

cat > "$WORK/mesh.yaml" <<CONF
mesh: bench
state_dir: $WORK/mesh-state
policies:
  traffic_permissions:
    enabled: true
    rules: [{name: client-to-server, from: bench-client, to: bench-server, action: allow}]
  tracing: {backend: "http://127.0.0.1:14317", sampling: 1.0}
CONF
$WEFT serve --data-dir "$WORK/weft-data" --otlp-grpc-addr 127.0.0.1:14317 --otlp-http-addr 127.0.0.1:14318 \
  --http-addr 127.0.0.1:16687 2>"$WORK/weft.log" &
SERVE_PID=$!
$WEFT mesh control-plane --config "$WORK/mesh.yaml" --addr 127.0.0.1:$CP 2>"$WORK/cp.log" &
# Tokens before the control plane starts: the state dir holds them.
$WEFT mesh token create --service bench-server --state-dir "$WORK/mesh-state" > "$WORK/server.token"
$WEFT mesh token create --service bench-client --state-dir "$WORK/mesh-state" > "$WORK/client.token"
$WEFT mesh sidecar --service bench-server --inbound 127.0.0.1:$SIDECAR_IN --app 127.0.0.1:$APP \
  --token-file "$WORK/server.token" --control-plane http://127.0.0.1:$CP --admin-addr 127.0.0.1:19102 2>"$WORK/server.log" &
SERVER_SIDECAR_PID=$!
$WEFT mesh sidecar --service bench-client --inbound 127.0.0.1:19103 --app 127.0.0.1:$APP \
  --outbound bench-server=127.0.0.1:$SIDECAR_OUT --token-file "$WORK/client.token" --control-plane http://127.0.0.1:$CP \
  --admin-addr 127.0.0.1:19104 2>"$WORK/client.log" &
CLIENT_SIDECAR_PID=$!
wait_for http://127.0.0.1:16687/api/v1/services
for port in $NGINX_OUT $SIDECAR_OUT; do wait_for "http://127.0.0.1:$port/"; done

# Each row warms up right before it is measured (see bench/gateway/run.sh).
warm_up $NGINX_OUT
IFS='|' read -r n_rps n_p50 n_p99 n_err <<<"$(measure $NGINX_OUT)"
warm_up $SIDECAR_OUT
IFS='|' read -r w_rps w_p50 w_p99 w_err w_cpu <<<"$(measure_with_cpu $SIDECAR_OUT $CLIENT_SIDECAR_PID $SERVER_SIDECAR_PID $SERVE_PID)"
sleep 2

echo "| hop | requests/s | × nginx pair | p50 ms | p99 ms | errors |"
echo "|---|---:|---:|---:|---:|---|"
for r in "nginx → TLS (client cert) → nginx|$n_rps|$n_p50|$n_p99|$n_err" \
         "weft sidecar → mTLS (SPIFFE) → weft sidecar, 100% traced + access logs|$w_rps|$w_p50|$w_p99|$w_err"; do
  row "$r" "$n_rps"
done
echo
read -r cpu_client cpu_server cpu_serve <<<"$w_cpu"
echo "CPU per request (user + system, µs): client sidecar $cpu_client, server sidecar $cpu_server, weft serve storing their telemetry $cpu_serve"
echo "telemetry (client sidecar): $(curl -s http://127.0.0.1:19104/metrics | grep '^weft_mesh_sidecar_telemetry' | tr '\n' ' ')"
echo "telemetry (server sidecar): $(curl -s http://127.0.0.1:19102/metrics | grep '^weft_mesh_sidecar_telemetry' | tr '\n' ' ')"
echo "wrk -t2 -c$CONNECTIONS -d$DURATION; $(nproc) cores; $(nginx -v 2>&1); $(wrk -v 2>&1 | head -1)"
