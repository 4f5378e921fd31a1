//! `weft gateway` end to end: the real binary on ephemeral ports in front of
//! real upstream servers, driven over HTTP by a real client; telemetry checked
//! in a real `weft serve`.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use support::*;

/// An upstream test server: echoes what it received as JSON, answers
/// `/health` according to `healthy`, `/status/{code}` with that code and
/// `/slow` after 2 s.
struct Backend {
    addr: SocketAddr,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    healthy: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
}

async fn echo(
    State(state): State<BackendState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Json<serde_json::Value> {
    state.hits.fetch_add(1, Ordering::Relaxed);
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    Json(serde_json::json!({
        "backend": state.name,
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "body_len": body.len(),
    }))
}

fn backend(name: &str) -> Backend {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let state = BackendState {
        name: name.to_string(),
        healthy: Arc::new(AtomicBool::new(true)),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    let app = Router::new()
        .route(
            "/health",
            get(|State(s): State<BackendState>| async move {
                if s.healthy.load(Ordering::Relaxed) {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            }),
        )
        .route(
            "/status/{code}",
            get(|UrlPath(code): UrlPath<u16>| async move {
                StatusCode::from_u16(code).unwrap().into_response()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "slow"
            }),
        )
        .fallback(echo)
        .with_state(state.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await });
    Backend {
        addr,
        healthy: state.healthy,
        hits: state.hits,
        _runtime: runtime,
    }
}

/// A running `weft gateway`.
struct Gateway {
    process: Process,
    proxy: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
}

impl Gateway {
    fn start(dir: &Path, yaml: &str, otlp: Option<&str>) -> Self {
        let config = dir.join("gateway.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .arg("gateway")
            .arg("--config")
            .arg(&config)
            .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .env("WEFT_LOG", "info");
        if let Some(endpoint) = otlp {
            command.args(["--otlp-endpoint", endpoint]);
        }
        let (process, line) = Process::spawn(command, "gateway");
        Self {
            proxy: logged_addr(&line, "proxy"),
            admin: logged_addr(&line, "admin"),
            process,
            config,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    fn admin_json(&self, path: &str) -> serde_json::Value {
        reqwest::blocking::get(format!("http://{}{path}", self.admin))
            .unwrap()
            .json()
            .unwrap()
    }

    fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        reqwest::blocking::get(url).unwrap().text().unwrap()
    }

    fn health(&self, upstream: &str) -> HashMap<String, String> {
        self.admin_json(&format!("/upstreams/{upstream}/health"))["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["target"].as_str().unwrap().to_string(),
                    t["health"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// A port nothing listens on: bound, then released.
fn unused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn routes_pick_the_service_by_path_host_method_and_header_and_strip_their_prefix() {
    let (mobile, legacy) = (backend("crm-mobile"), backend("crm-legacy"));
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
services:
  - name: crm-mobile
    url: http://{mobile}/v1
    routes:
      - name: mobile-api
        paths: [/api]
      - name: mobile-admin-host
        hosts: [admin.crm.test]
        paths: [/api]
        strip_path: false
  - name: crm-legacy
    url: http://{legacy}
    routes:
      - name: legacy-orders
        paths: ['~/v\\d+/orders']
        methods: [POST]
      - name: legacy-by-header
        paths: [/api]
        headers: {{x-legacy: ['yes']}}
",
            mobile = mobile.addr,
            legacy = legacy.addr
        ),
        None,
    );
    let c = client();
    let (status, body) = get_json(
        c.get(gateway.url("/api/accounts/7?sort=name"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(body["backend"], "crm-mobile");
    assert_eq!(
        body["path"], "/v1/accounts/7",
        "prefix stripped, service path prepended"
    );
    assert_eq!(body["query"], "sort=name");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        body["headers"]["host"],
        mobile.addr.to_string(),
        "the target's host, not the client's"
    );

    let (_, body) = get_json(
        c.get(gateway.url("/api/accounts"))
            .header("host", "admin.crm.test")
            .send()
            .unwrap(),
    );
    assert_eq!(
        body["path"], "/v1/api/accounts",
        "strip_path: false keeps the prefix"
    );

    let (_, body) = get_json(c.post(gateway.url("/v2/orders/9")).send().unwrap());
    assert_eq!(
        (body["backend"].as_str(), body["path"].as_str()),
        (Some("crm-legacy"), Some("/9"))
    );

    let (_, body) = get_json(
        c.get(gateway.url("/api/x"))
            .header("x-legacy", "yes")
            .send()
            .unwrap(),
    );
    assert_eq!(body["backend"], "crm-legacy");

    let (status, body) = get_json(c.get(gateway.url("/v2/orders/9")).send().unwrap());
    assert_eq!(status, 404, "GET does not match a POST-only route");
    assert_eq!(body["message"], "no Route matched with those values");
    let (status, _) = get_json(c.get(gateway.url("/apix")).send().unwrap());
    assert_eq!(status, 404, "a prefix matches whole path segments");

    let routes = gateway.admin_json("/routes");
    assert_eq!(routes["data"].as_array().unwrap().len(), 4);
    assert!(gateway.process.stop().success());
}

const RSA_PUBLIC: &str = include_str!("fixtures/gateway/jwt-test-public.pem");
const RSA_PRIVATE: &str = include_str!("fixtures/gateway/jwt-test-private.pem");

fn token(
    claims: serde_json::Value,
    key: &jsonwebtoken::EncodingKey,
    algorithm: jsonwebtoken::Algorithm,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, key).unwrap()
}

#[test]
fn key_auth_jwt_and_acl_answer_401_and_403_and_name_the_consumer_upstream() {
    let upstream = backend("crm-mobile");
    let dir = tempfile::tempdir().unwrap();
    let public_key = RSA_PUBLIC.replace('\n', "\n          ");
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
consumers:
  - username: alice
    groups: [gold]
    keyauth_credentials: [{{key: alice-key}}]
    jwt_secrets:
      - {{key: alice-issuer, algorithm: HS256, secret: alice-secret}}
  - username: bob
    groups: [basic]
    keyauth_credentials: [{{key: bob-key}}]
    jwt_secrets:
      - key: bob-issuer
        algorithm: RS256
        rsa_public_key: |
          {public_key}
services:
  - name: crm-mobile
    url: http://{addr}
    routes:
      - name: keyed
        paths: [/keyed]
        plugins:
          - name: key-auth
            config: {{hide_credentials: true}}
          - name: acl
            config: {{allow: [gold]}}
      - name: tokens
        paths: [/tokens]
        plugins:
          - name: jwt
",
            addr = upstream.addr
        ),
        None,
    );
    let c = client();
    let (status, body) = get_json(c.get(gateway.url("/keyed")).send().unwrap());
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("No API key found in request"))
    );
    let (status, _) = get_json(
        c.get(gateway.url("/keyed"))
            .header("apikey", "wrong")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 401);
    let (status, body) = get_json(
        c.get(gateway.url("/keyed"))
            .header("apikey", "bob-key")
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("You cannot consume this service"))
    );
    let (status, body) = get_json(
        c.get(gateway.url("/keyed"))
            .header("apikey", "alice-key")
            .header("x-consumer-username", "forged")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-consumer-username"], "alice");
    assert!(
        body["headers"].get("apikey").is_none(),
        "hide_credentials removes the key"
    );
    let (status, body) = get_json(
        c.get(gateway.url("/keyed?apikey=alice-key&page=2"))
            .send()
            .unwrap(),
    );
    assert_eq!((status, body["query"].as_str()), (200, Some("page=2")));

    let in_an_hour = jsonwebtoken::get_current_timestamp() + 3600;
    let with_token = |token: &str| {
        get_json(
            c.get(gateway.url("/tokens"))
                .bearer_auth(token)
                .send()
                .unwrap(),
        )
    };
    let hs256 = |claims: serde_json::Value, secret: &[u8]| {
        token(
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
            jsonwebtoken::Algorithm::HS256,
        )
    };
    let (status, body) = with_token(&hs256(
        serde_json::json!({"iss": "alice-issuer", "exp": in_an_hour}),
        b"alice-secret",
    ));
    assert_eq!(
        (status, body["headers"]["x-consumer-username"].as_str()),
        (200, Some("alice"))
    );
    let (status, body) = with_token(&hs256(
        serde_json::json!({"iss": "alice-issuer", "exp": 1000}),
        b"alice-secret",
    ));
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Token expired"))
    );
    let (status, body) = with_token(&hs256(
        serde_json::json!({"iss": "alice-issuer", "exp": in_an_hour}),
        b"guess",
    ));
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Invalid signature"))
    );
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let bobs = token(
        serde_json::json!({"iss": "bob-issuer", "exp": in_an_hour}),
        &rsa,
        jsonwebtoken::Algorithm::RS256,
    );
    let (status, body) = get_json(
        c.get(gateway.url(&format!("/tokens?jwt={bobs}")))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, body["headers"]["x-consumer-username"].as_str()),
        (200, Some("bob"))
    );
    let (status, _) = get_json(c.get(gateway.url("/tokens")).send().unwrap());
    assert_eq!(status, 401);

    let consumers = gateway.admin_json("/consumers").to_string();
    assert!(
        consumers.contains("alice")
            && !consumers.contains("alice-key")
            && !consumers.contains("alice-secret")
    );
    assert_eq!(
        upstream.hits.load(Ordering::Relaxed),
        4,
        "refused requests never reach the upstream"
    );
    assert!(gateway.process.stop().success());
}

#[test]
fn plugins_limit_rates_and_sizes_answer_cors_and_transform_headers() {
    let upstream = backend("crm-mobile");
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
plugins:
  - name: correlation-id
services:
  - name: crm-mobile
    url: http://{addr}
    plugins:
      - name: request-transformer
        config:
          add: {{headers: ['x-gateway:weft']}}
          remove: {{headers: [x-internal]}}
      - name: response-transformer
        config:
          add: {{headers: ['x-served-by:weft']}}
    routes:
      - name: limited
        paths: [/limited]
        plugins:
          - name: rate-limiting
            config: {{minute: 3, limit_by: ip}}
      - name: browser
        paths: [/browser]
        plugins:
          - name: cors
            config: {{origins: ['https://app.crm.test'], credentials: true, max_age: 600}}
          - name: request-size-limiting
            config: {{allowed_payload_size: 1, size_unit: kilobytes}}
",
            addr = upstream.addr
        ),
        None,
    );
    let c = client();
    for remaining in [2, 1, 0] {
        let response = c.get(gateway.url("/limited")).send().unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        assert_eq!(
            response.headers()["x-ratelimit-remaining-minute"],
            remaining.to_string().as_str()
        );
    }
    let refused = c.get(gateway.url("/limited")).send().unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.headers()["retry-after"],
        "20",
        "a token of 3/minute comes back in 20 s"
    );
    assert!(
        refused.headers().contains_key("x-request-id"),
        "global plugins apply to refusals too"
    );
    assert_eq!(
        refused.json::<serde_json::Value>().unwrap()["message"],
        "API rate limit exceeded"
    );

    let preflight = c
        .request(reqwest::Method::OPTIONS, gateway.url("/browser"))
        .header("origin", "https://app.crm.test")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.crm.test"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type"
    );
    assert_eq!(preflight.headers()["access-control-max-age"], "600");
    let stranger = c
        .get(gateway.url("/browser"))
        .header("origin", "https://evil.test")
        .send()
        .unwrap();
    assert!(!stranger
        .headers()
        .contains_key("access-control-allow-origin"));

    let response = c
        .post(gateway.url("/browser"))
        .header("origin", "https://app.crm.test")
        .header("x-internal", "secret")
        .header("x-request-id", "req-42")
        .body("small")
        .send()
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.crm.test"
    );
    assert_eq!(response.headers()["x-served-by"], "weft");
    assert_eq!(
        response.headers()["x-request-id"],
        "req-42",
        "an incoming id is kept and echoed"
    );
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(body["headers"]["x-gateway"], "weft");
    assert_eq!(body["headers"]["x-request-id"], "req-42");
    assert!(body["headers"].get("x-internal").is_none());

    let (status, body) = get_json(
        c.post(gateway.url("/browser"))
            .body(vec![b'x'; 2048])
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, body["message"].as_str()),
        (413, Some("Request size limit exceeded"))
    );
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(vec![b'x'; 4096]));
    let (status, _) = get_json(
        c.post(gateway.url("/browser"))
            .body(chunked)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 413, "a chunked body is cut off at the limit too");

    let metrics = gateway.metrics();
    assert!(
        metrics.contains(
            "weft_gateway_requests_total{service=\"crm-mobile\",route=\"limited\",code=\"429\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("weft_gateway_request_duration_seconds_bucket"));
    assert!(gateway.process.stop().success());
}

#[test]
fn health_checks_take_failing_targets_out_and_bring_them_back_without_failed_requests() {
    let (first, second) = (backend("first"), backend("second"));
    let dead = unused_port();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
upstreams:
  - name: crm-pool
    targets: [{{target: '{first}'}}, {{target: '{second}'}}, {{target: '{dead}'}}]
    healthchecks:
      active: {{http_path: /health, interval: 100ms, timeout: 500ms, healthy_successes: 2, unhealthy_failures: 2}}
      passive: {{unhealthy_failures: 1}}
services:
  - name: crm-mobile
    url: http://crm-pool
    routes: [{{name: all, paths: [/]}}]
",
            first = first.addr,
            second = second.addr
        ),
        None,
    );
    let c = client();
    for _ in 0..30 {
        let (status, _) = get_json(c.get(gateway.url("/accounts")).send().unwrap());
        assert_eq!(
            status, 200,
            "a dead target costs a retry, not a failed request"
        );
    }
    eventually("the dead target to be marked unhealthy", || {
        gateway.health("crm-pool")[&dead.to_string()] == "UNHEALTHY"
    });
    second.healthy.store(false, Ordering::Relaxed);
    eventually("active checks to take the failing target out", || {
        gateway.health("crm-pool")[&second.addr.to_string()] == "UNHEALTHY"
    });
    let before = second.hits.load(Ordering::Relaxed);
    for _ in 0..10 {
        let (_, body) = get_json(c.get(gateway.url("/accounts")).send().unwrap());
        assert_eq!(body["backend"], "first");
    }
    assert_eq!(
        second.hits.load(Ordering::Relaxed),
        before,
        "an unhealthy target gets no traffic"
    );
    second.healthy.store(true, Ordering::Relaxed);
    eventually("active checks to bring the target back", || {
        gateway.health("crm-pool")[&second.addr.to_string()] == "HEALTHY"
    });
    let served: std::collections::HashSet<String> = (0..10)
        .map(|_| {
            get_json(c.get(gateway.url("/accounts")).send().unwrap()).1["backend"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        served.len(),
        2,
        "both healthy targets serve again: {served:?}"
    );
    let metrics = gateway.metrics();
    assert!(metrics.contains(&format!(
        "weft_gateway_upstream_target_healthy{{upstream=\"crm-pool\",target=\"{dead}\"}} 0"
    )));

    // A target slower than read_timeout answers 504; one that refuses connections, 502.
    std::fs::write(
        &gateway.config,
        format!(
            "services:
  - name: slow
    url: http://{}
    read_timeout: 300ms
    retries: 0
    routes: [{{name: slow, paths: [/slow], strip_path: false}}]
  - name: gone
    url: http://{dead}
    routes: [{{name: gone, paths: [/gone]}}]
",
            first.addr
        ),
    )
    .unwrap();
    let (status, body) = get_json(
        c.post(format!("http://{}/config/reload", gateway.admin))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let (status, body) = get_json(c.get(gateway.url("/slow")).send().unwrap());
    assert_eq!(
        (status, body["message"].as_str()),
        (504, Some("The upstream server is timing out"))
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    let (status, body) = get_json(c.get(gateway.url("/gone")).send().unwrap());
    assert_eq!(
        (status, body["message"].as_str()),
        (
            502,
            Some("An invalid response was received from the upstream server")
        ),
        "the retries found no other target: the connection failure is the answer"
    );
    assert!(gateway.process.stop().success());
}

#[test]
fn reloads_under_traffic_fail_no_request_and_an_invalid_config_keeps_the_running_one() {
    let (old, new) = (backend("old"), backend("new"));
    let dir = tempfile::tempdir().unwrap();
    let config = |addr: SocketAddr| {
        format!("services:\n  - name: crm\n    url: http://{addr}\n    routes: [{{name: crm, paths: [/crm]}}]\n")
    };
    let mut gateway = Gateway::start(dir.path(), &config(old.addr), None);
    let stop = Arc::new(AtomicBool::new(false));
    let url = gateway.url("/crm/accounts");
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), url.clone());
            std::thread::spawn(move || {
                let c = client();
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).send() {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    eventually("traffic on the old backend", || {
        old.hits.load(Ordering::Relaxed) > 50
    });
    std::fs::write(&gateway.config, config(new.addr)).unwrap();
    gateway.process.signal(libc::SIGHUP);
    eventually("traffic on the new backend after SIGHUP", || {
        new.hits.load(Ordering::Relaxed) > 50
    });

    std::fs::write(
        &gateway.config,
        "services:\n  - name: crm\n    url: http://x:1\n    routes: [{name: crm, paths: [nope]}]\n",
    )
    .unwrap();
    let response = client()
        .post(format!("http://{}/config/reload", gateway.admin))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.json::<serde_json::Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.starts_with("line 4: services[0].routes[0].paths[0]"),
        "{message}"
    );
    let response = client()
        .post(format!("http://{}/config", gateway.admin))
        .body(config(old.addr))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let old_hits = old.hits.load(Ordering::Relaxed);
    eventually("traffic back on the old backend after POST /config", || {
        old.hits.load(Ordering::Relaxed) > old_hits + 50
    });
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for thread in traffic {
        let (o, f) = thread.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(message.contains("must start with /"), "{message}");
    assert!(gateway.process.stop().success());
}

#[test]
fn an_invalid_config_stops_start_up_with_the_line_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, "services:\n  - name: a\n    url: http://127.0.0.1:1\n    routes:\n      - name: r\n        pahts: [/a]\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["gateway", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown field `pahts`") && stderr.contains("line 6"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_tunnelled_to_the_target() {
    use futures::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("services:\n  - name: live\n    url: http://{upstream}\n    routes: [{{name: live, paths: [/live]}}]\n");
    let gateway = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || Gateway::start(&dir, &yaml, None)
    })
    .await
    .unwrap();
    let (mut ws, response) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/feed", gateway.proxy))
            .await
            .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["opportunity 1 won", "opportunity 2 lost"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
    tokio::task::spawn_blocking(move || assert!(gateway.process.stop().success()))
        .await
        .unwrap();
}

#[test]
fn every_request_is_traced_and_logged_into_weft_continuing_the_callers_trace() {
    let upstream = backend("crm-mobile");
    let data = tempfile::tempdir().unwrap();
    let weft = Weft::start(data.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
telemetry:
  batch_timeout: 50ms
services:
  - name: crm-mobile
    url: http://{addr}
    routes: [{{name: mobile-api, paths: [/api]}}]
",
            addr = upstream.addr
        ),
        Some(&weft.grpc_url()),
    );
    let c = client();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, body) = get_json(
        c.get(gateway.url("/api/accounts/42"))
            .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    let forwarded = body["headers"]["traceparent"].as_str().unwrap().to_string();
    assert!(
        forwarded.starts_with(&format!("00-{trace_id}-")),
        "{forwarded}"
    );
    let client_span = forwarded.split('-').nth(2).unwrap().to_string();
    let (status, _) = get_json(c.get(gateway.url("/nowhere")).send().unwrap());
    assert_eq!(status, 404);

    let spans_sql = format!(
        "SELECT span_id, parent_span_id, kind, name, service_name, \
         attributes['http.route'], attributes['http.response.status_code'], attributes['server.address'] \
         FROM spans WHERE trace_id = '{trace_id}' ORDER BY start_time"
    );
    let mut rows = Vec::new();
    eventually("the gateway's spans in weft", || {
        rows = weft.sql_rows(&spans_sql);
        rows.len() == 2
    });
    let server = &rows[0];
    let client_row = &rows[1];
    assert_eq!(
        server[1], caller_span,
        "the SERVER span continues the caller's trace"
    );
    assert_eq!(server[2], "SERVER");
    assert_eq!(server[3], "GET /api");
    assert_eq!(server[4], "weft-gateway");
    assert_eq!(server[5], "/api");
    assert_eq!(server[6], "200");
    assert_eq!(
        client_row[0],
        client_span.as_str(),
        "the upstream saw the CLIENT span as its parent"
    );
    assert_eq!(
        client_row[1], server[0],
        "the CLIENT span is the SERVER span's child"
    );
    assert_eq!(client_row[2], "CLIENT");
    assert_eq!(client_row[7], "127.0.0.1");

    let logs_sql = format!(
        "SELECT span_id, severity_text, body, attributes['http.response.status_code'] FROM logs \
         WHERE trace_id = '{trace_id}'"
    );
    let mut logs = Vec::new();
    eventually("the access log in weft", || {
        logs = weft.sql_rows(&logs_sql);
        !logs.is_empty()
    });
    assert_eq!(
        logs[0][0], server[0],
        "the access log belongs to the SERVER span"
    );
    assert_eq!(logs[0][1], "INFO");
    assert!(
        logs[0][2]
            .as_str()
            .unwrap()
            .contains("\"GET /api/accounts/42\" 200"),
        "{:?}",
        logs[0][2]
    );

    eventually("the unmatched request's own trace", || {
        let rows = weft.sql_rows(
            "SELECT count(*) FROM spans WHERE service_name = 'weft-gateway' AND attributes['http.response.status_code'] = '404'",
        );
        rows[0][0] == 1
    });
    assert!(gateway.process.stop().success());
    assert!(weft.stop().success());
}

#[test]
fn a_collector_that_is_down_costs_telemetry_not_requests() {
    let upstream = backend("crm-mobile");
    let nowhere = unused_port();
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "telemetry: {{batch_timeout: 20ms, export_timeout: 200ms}}\nservices:\n  - name: crm\n    url: http://{}\n    routes: [{{name: crm, paths: [/]}}]\n",
            upstream.addr
        ),
        Some(&format!("http://{nowhere}")),
    );
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            c.get(gateway.url("/accounts")).send().unwrap().status(),
            200
        );
    }
    eventually("dropped telemetry to be counted", || {
        let status = gateway.admin_json("/status");
        status["telemetry"]["spans_dropped"].as_u64().unwrap() >= 100
            && status["telemetry"]["logs_dropped"].as_u64().unwrap() >= 50
    });
    let metrics = gateway.metrics();
    assert!(
        metrics.contains("weft_gateway_telemetry_dropped_total{signal=\"spans\"} 100"),
        "{metrics}"
    );
    assert!(gateway.process.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http2_cleartext_passes_through_with_its_trailers() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (weft, gateway) = tokio::task::spawn_blocking({
        let (data, dir) = (data.path().to_path_buf(), dir.path().to_path_buf());
        move || {
            let weft = Weft::start(&data, &[]);
            let yaml = format!(
                "services:\n  - name: otlp\n    url: http://{}\n    protocol: h2c\n    routes: [{{name: otlp, paths: [/opentelemetry.proto.collector.trace.v1.TraceService], strip_path: false}}]\n",
                weft.otlp_grpc
            );
            let gateway = Gateway::start(&dir, &yaml, None);
            (weft, gateway)
        }
    })
    .await
    .unwrap();
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.proxy))
        .await
        .unwrap();
    let response = client
        .export(spans_request("crm-mobile", 0..25))
        .await
        .expect("tonic fails a call whose grpc-status trailer is missing");
    assert!(response.into_inner().partial_success.is_none());
    let mut malformed = spans_request("crm-mobile", 100..101);
    malformed.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 8];
    let partial = client
        .export(malformed)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .expect("weft's partial success, relayed");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("trace_id must be 16 bytes"),
        "{}",
        partial.error_message
    );
    tokio::task::spawn_blocking(move || {
        let stored = weft.sql_rows("SELECT count(*) FROM spans WHERE service_name = 'crm-mobile'");
        assert_eq!(stored[0][0], 25);
        assert!(gateway.process.stop().success());
        assert!(weft.stop().success());
    })
    .await
    .unwrap();
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_cleanly() {
    let upstream = backend("crm-mobile");
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        dir.path(),
        &format!(
            "
services:
  - name: crm-mobile
    url: http://{}
    routes: [{{name: all, paths: [/]}}]
",
            upstream.addr
        ),
        None,
    );
    let slow = {
        let url = gateway.url("/slow");
        std::thread::spawn(move || {
            let response = reqwest::blocking::Client::new()
                .get(url)
                .timeout(Duration::from_secs(30))
                .send()?;
            Ok::<_, reqwest::Error>((response.status(), response.text()?))
        })
    };
    // The request has reached the target (the upstream answers it after 2 s).
    eventually_within(
        "the request in flight at the target",
        Duration::from_secs(10),
        || gateway.admin_json("/upstreams/crm-mobile/health")["data"][0]["in_flight"] == 1,
    );
    let exit = gateway.process.stop();
    assert!(exit.success(), "the gateway exited with {exit}");
    let (status, body) = slow
        .join()
        .unwrap()
        .expect("the request in flight was cut off");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "slow"));
}
