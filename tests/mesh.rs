//! `weft mesh` end to end: the real binary as control plane and sidecars on
//! loopback, real app servers behind them, the test playing the calling app;
//! traces checked in a real `weft serve`.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, Uri};
use axum::routing::any;
use axum::{Json, Router};
use rustls::pki_types::pem::PemObject;
use support::*;

/// An app behind a sidecar.
struct App {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl App {
    /// Runs `serve` on a loopback listener of its own, in a runtime of its own.
    fn serve<F>(serve: impl FnOnce(tokio::net::TcpListener) -> F) -> Self
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(serve(listener));
        Self {
            addr,
            _runtime: runtime,
        }
    }
}

/// An HTTP app that answers every request with what it received.
fn echo_app(name: &'static str) -> App {
    let app = Router::new().fallback(any(
        move |method: Method, uri: Uri, headers: HeaderMap| async move {
            let headers: HashMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                .collect();
            Json(serde_json::json!({
                "app": name,
                "method": method.as_str(),
                "path": uri.path(),
                "headers": headers,
            }))
        },
    ));
    App::serve(|listener| async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// A TCP app that echoes every byte back.
fn tcp_echo_app() -> App {
    App::serve(|listener| async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    })
}

struct ControlPlane {
    process: Process,
    addr: SocketAddr,
    state_dir: std::path::PathBuf,
}

impl ControlPlane {
    /// `weft mesh control-plane` with `yaml` as its file in `dir`, on `addr`.
    fn start_on(dir: &Path, yaml: &str, addr: &str) -> Self {
        let config = dir.join("mesh.yaml");
        if !config.exists() {
            std::fs::write(&config, yaml).unwrap();
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .args(["mesh", "control-plane", "--addr", addr, "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env("WEFT_LOG", "info");
        let (process, line) = Process::spawn(command, "control-plane");
        Self {
            addr: logged_addr(&line, "addr"),
            process,
            state_dir: dir.join("state"),
        }
    }

    /// `weft mesh token create <args>` for this control plane: (id, token).
    fn token(&self, args: &[&str]) -> (String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["mesh", "token", "create", "--state-dir"])
            .arg(&self.state_dir)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let id = stderr
            .split_whitespace()
            .nth(2)
            .expect("created token <id>")
            .to_string();
        let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
        (id, token)
    }

    /// A dataplane token for `service`.
    fn sidecar_token(&self, service: &str) -> String {
        self.token(&["--service", service]).1
    }

    fn start(dir: &Path, yaml: &str) -> Self {
        Self::start_on(dir, yaml, "127.0.0.1:0")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn put_policies(&self, yaml: &str) {
        let response = client()
            .put(self.url("/policies"))
            .body(yaml.to_string())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    }

    fn dataplanes(&self) -> Vec<serde_json::Value> {
        let body: serde_json::Value = client()
            .get(self.url("/dataplanes"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        body["dataplanes"].as_array().unwrap().clone()
    }
}

struct Sidecar {
    process: Process,
    inbound: SocketAddr,
    admin: SocketAddr,
    outbound: HashMap<String, SocketAddr>,
}

impl Sidecar {
    fn start(
        control_plane: &ControlPlane,
        service: &str,
        app: SocketAddr,
        protocol: &str,
        outbound: &[&str],
    ) -> Self {
        let token = control_plane.sidecar_token(service);
        Self::start_with_token(control_plane, service, app, protocol, outbound, &token, &[])
    }

    /// An HTTP app's sidecar that says it runs in `zone`.
    fn start_in_zone(
        control_plane: &ControlPlane,
        service: &str,
        app: SocketAddr,
        outbound: &[&str],
        zone: &str,
    ) -> Self {
        let token = control_plane.sidecar_token(service);
        let zone = ["--zone", zone];
        Self::start_with_token(control_plane, service, app, "http", outbound, &token, &zone)
    }

    fn start_with_token(
        control_plane: &ControlPlane,
        service: &str,
        app: SocketAddr,
        protocol: &str,
        outbound: &[&str],
        token: &str,
        extra_args: &[&str],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command
            .args(["mesh", "sidecar", "--service", service])
            .args(["--inbound", "127.0.0.1:0", "--app", &app.to_string()])
            .args(["--app-protocol", protocol])
            .args(["--control-plane", &control_plane.url("")])
            .args(["--shutdown-grace", "2s"])
            .args(extra_args)
            .env("WEFT_SIDECAR_TOKEN", token)
            .env("WEFT_LOG", "info");
        if !outbound.is_empty() {
            let listeners: Vec<String> = outbound
                .iter()
                .map(|s| format!("{s}=127.0.0.1:0"))
                .collect();
            command.args(["--outbound", &listeners.join(",")]);
        }
        let (process, line) = Process::spawn(command, "sidecar");
        let outbound = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("outbound="))
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| {
                let (service, addr) = pair.split_once('=')?;
                Some((service.to_string(), addr.parse().ok()?))
            })
            .collect();
        Self {
            inbound: logged_addr(&line, "inbound"),
            admin: logged_addr(&line, "admin"),
            outbound,
            process,
        }
    }

    /// The app's URL for calls to `service` through this sidecar.
    fn call(&self, service: &str, path: &str) -> String {
        format!("http://{}{path}", self.outbound[service])
    }

    fn admin_json(&self, path: &str) -> serde_json::Value {
        client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    fn metrics(&self) -> String {
        client()
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }
}

/// A control plane, `crm-database` behind a sidecar, and the sidecar of
/// `crm-conductor` (whose app is the test) with outbound listeners.
struct Mesh {
    control_plane: ControlPlane,
    database: Sidecar,
    conductor: Sidecar,
    _apps: Vec<App>,
    _dir: tempfile::TempDir,
}

fn mesh(yaml: &str, outbound: &[&str]) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let control_plane = ControlPlane::start(dir.path(), yaml);
    let database_app = echo_app("crm-database");
    let database = Sidecar::start(
        &control_plane,
        "crm-database",
        database_app.addr,
        "http",
        &[],
    );
    let (conductor, conductor_app) = conductor(&control_plane, outbound);
    let c = client();
    eventually(
        "the conductor's sidecar to learn where crm-database is",
        || {
            c.get(conductor.call("crm-database", "/ready"))
                .send()
                .is_ok_and(|r| r.status() != 503)
        },
    );
    Mesh {
        control_plane,
        database,
        conductor,
        _apps: vec![database_app, conductor_app],
        _dir: dir,
    }
}

const MESH: &str = "mesh: crm\n";

/// `crm-conductor`'s sidecar, with outbound listeners to `outbound`, and
/// the echo app behind it (the test plays the app when it calls out).
fn conductor(control_plane: &ControlPlane, outbound: &[&str]) -> (Sidecar, App) {
    let app = echo_app("crm-conductor");
    let sidecar = Sidecar::start(control_plane, "crm-conductor", app.addr, "http", outbound);
    (sidecar, app)
}

#[test]
fn calls_cross_the_mesh_over_mtls_and_other_clients_are_refused() {
    let mesh = mesh(MESH, &["crm-database", "crm-salesforce"]);
    let c = client();
    let (status, body) = get_json(
        c.get(mesh.conductor.call("crm-database", "/accounts/42?x=1"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["app"], "crm-database");
    assert_eq!(body["path"], "/accounts/42");
    assert_eq!(
        body["headers"]["x-forwarded-client-cert"],
        "By=spiffe://crm/crm-database;URI=spiffe://crm/crm-conductor",
        "the app learns who called, as mTLS proved it"
    );
    let (status, body) = get_json(
        c.post(mesh.conductor.call("crm-database", "/accounts"))
            .body("{\"name\":\"ACME\"}")
            .send()
            .unwrap(),
    );
    assert_eq!((status, body["method"].as_str()), (200, Some("POST")));

    // Plain text to the inbound listener: no HTTP answer.
    let plain = c
        .get(format!("http://{}/accounts/42", mesh.database.inbound))
        .send();
    assert!(plain.is_err(), "plain text got {plain:?}");

    // A certificate from another CA, with the right name: refused too.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = ControlPlane::start(other_dir.path(), MESH);
    let answer = foreign_client_request(&other_ca, mesh.database.inbound);
    assert!(
        !answer.contains("HTTP/"),
        "a client the mesh CA did not sign got an answer: {answer:?}"
    );
    assert!(
        mesh.database.metrics().lines().any(|l| l
            .starts_with("weft_mesh_sidecar_tls_handshake_failures_total")
            && !l.ends_with(" 0")),
        "refused handshakes are counted"
    );

    // A peer that is not who the registry says: the caller's sidecar refuses it.
    let bogus = serde_json::json!({
        "service": "crm-salesforce",
        "address": mesh.database.inbound.to_string(),
        "protocol": "http",
        "certificate_not_after": 0,
        "config_version": "",
    });
    let salesforce_token = mesh.control_plane.sidecar_token("crm-salesforce");
    let response = c
        .put(mesh.control_plane.url("/sidecar/v1/dataplanes/impostor"))
        .bearer_auth(&salesforce_token)
        .json(&bogus)
        .send()
        .unwrap();
    assert_eq!(response.status(), 204);
    let mut last = (0, serde_json::Value::Null);
    eventually("the impostor to be refused", || {
        last = get_json(
            c.get(mesh.conductor.call("crm-salesforce", "/"))
                .send()
                .unwrap(),
        );
        last.0 == 502
    });
    let message = last.1["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("spiffe://crm/crm-database")
            && message.contains("spiffe://crm/crm-salesforce"),
        "{message}"
    );
}

/// Speaks TLS to `inbound` with a certificate signed by `other`'s CA, sends
/// an HTTP/2 preface, and returns whatever comes back before the close.
fn foreign_client_request(other: &ControlPlane, inbound: SocketAddr) -> String {
    let token = other.sidecar_token("crm-conductor");
    let (key, (status, signed)) = certificate_request(other, "crm-conductor", Some(&token));
    assert_eq!(status, 200, "{signed}");
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        PemObject::pem_slice_iter(signed["certificate"].as_str().unwrap().as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Accept any server: the point is what the server does with our certificate.
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(weft_access::tls::AnyServerCertificate::new(
            provider,
        )))
        .with_client_auth_cert(
            chain,
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let mut connection = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::IpAddress(inbound.ip().into()),
    )
    .unwrap();
    let mut socket = std::net::TcpStream::connect(inbound).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut connection, &mut socket);
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).to_string()
}

#[test]
fn permission_and_rego_changes_reach_live_sidecars() {
    let mesh = mesh(MESH, &["crm-database"]);
    let c = client();
    let status = |method: Method| {
        c.request(method, mesh.conductor.call("crm-database", "/accounts/7"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(Method::GET), 200);

    // Zero trust on, and no rule: denied, with the reason logged by the callee.
    mesh.control_plane
        .put_policies("traffic_permissions: {enabled: true}");
    eventually("deny by default", || status(Method::GET) == 403);
    let (_, body) = get_json(
        c.get(mesh.conductor.call("crm-database", "/accounts/7"))
            .send()
            .unwrap(),
    );
    assert_eq!(
        body["message"],
        "crm-conductor is not permitted to call crm-database"
    );
    eventually("the denial in the callee's log", || {
        mesh.database.process.log().contains("request denied")
    });

    // A rule allows it; another, more specific, denies someone else.
    mesh.control_plane.put_policies(
        "
traffic_permissions:
  enabled: true
  rules:
    - {name: conductor-to-database, from: crm-conductor, to: crm-database, action: allow}
    - {name: nobody-else, from: '*', to: crm-database, action: deny}
",
    );
    eventually("the allow rule", || status(Method::GET) == 200);

    // Rego: reads only.
    mesh.control_plane.put_policies(
        r#"
authorization:
  - name: reads-only
    to: crm-database
    rego: |
      package weft.authz
      default allow := false
      allow if {
        input.request.method == "GET"
        input.source.spiffe_id == "spiffe://crm/crm-conductor"
        startswith(input.request.path, "/accounts/")
      }
"#,
    );
    eventually("the Rego policy", || status(Method::POST) == 403);
    assert_eq!(status(Method::GET), 200);
    let (_, body) = get_json(
        c.delete(mesh.conductor.call("crm-database", "/accounts/7"))
            .send()
            .unwrap(),
    );
    assert_eq!(body["message"], "request denied by policy reads-only");
    eventually("the policy named in the callee's log", || {
        mesh.database.process.log().contains("rule=reads-only")
    });

    // An invalid policy is refused with the reason, and the running one stays.
    let response = c
        .put(mesh.control_plane.url("/policies"))
        .body("authorization: [{name: x, to: crm-database, rego: 'package x\nallow if {'}]")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let message = response.text().unwrap();
    assert!(
        message.contains("policies.authorization[0].rego"),
        "{message}"
    );
    assert_eq!(status(Method::POST), 403);

    // The control plane shows who runs what.
    let dataplanes = mesh.control_plane.dataplanes();
    let database = dataplanes
        .iter()
        .find(|d| d["service"] == "crm-database")
        .expect("the database's sidecar is listed");
    assert_eq!(database["spiffe_id"], "spiffe://crm/crm-database");
    assert_eq!(database["policies"]["authorization"][0], "reads-only");
    assert!(database["certificate_expires_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
}

#[test]
fn certificates_rotate_under_traffic_without_a_failed_request() {
    let mesh = mesh("mesh: crm\ncertificates: {ttl: 3s}\n", &["crm-database"]);
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = mesh.conductor.call("crm-database", "/accounts/1");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (failures, done, stop, url) =
                (failures.clone(), done.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    match c.get(&url).send() {
                        Ok(r) if r.status() == 200 => {}
                        other => {
                            eprintln!("failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    eventually("two rotations on both sides", || {
        [&mesh.conductor, &mesh.database]
            .iter()
            .all(|s| s.admin_json("/")["certificate_generation"].as_u64() >= Some(2))
    });
    // New connections after the rotations work too: a fresh sidecar calls in.
    let mobile_app = echo_app("crm-mobile");
    let mobile = Sidecar::start(
        &mesh.control_plane,
        "crm-mobile",
        mobile_app.addr,
        "http",
        &["crm-database"],
    );
    eventually("a new caller after the rotations", || {
        client()
            .get(mobile.call("crm-database", "/accounts/2"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 20, "traffic flowed");
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert!(mesh
        .database
        .metrics()
        .contains("weft_mesh_sidecar_certificate_rotations_total"));
}

#[test]
fn sidecars_keep_their_last_config_while_the_control_plane_is_down() {
    let mesh = mesh(
        "
mesh: crm
policies:
  traffic_permissions:
    enabled: true
    rules: [{name: conductor-to-database, from: crm-conductor, to: crm-database, action: allow}]
",
        &["crm-database", "crm-cache"],
    );
    let Mesh {
        control_plane,
        database,
        conductor,
        _apps,
        _dir,
    } = mesh;
    let c = client();
    let addr = control_plane.addr.to_string();
    control_plane.process.kill9();
    for _ in 0..20 {
        let (status, _) = get_json(
            c.get(conductor.call("crm-database", "/accounts/3"))
                .send()
                .unwrap(),
        );
        assert_eq!(status, 200, "served with the last config");
        std::thread::sleep(Duration::from_millis(100));
    }
    eventually("the sidecar to notice", || {
        conductor
            .process
            .log()
            .contains("serving with the last config")
    });

    // The control plane comes back on the same address with the same CA:
    // sidecars report in again and receive changes.
    let control_plane = ControlPlane::start_on(_dir.path(), "", &addr);
    eventually("both sidecars registered again", || {
        control_plane.dataplanes().len() == 2
    });
    control_plane.put_policies("traffic_permissions: {enabled: true}");
    eventually("the change after the restart", || {
        c.get(conductor.call("crm-database", "/accounts/3"))
            .send()
            .unwrap()
            .status()
            == 403
    });
    let (status, _) = get_json(c.get(conductor.call("crm-cache", "/")).send().unwrap());
    assert_eq!(status, 503, "no sidecar of crm-cache is known");
    assert!(conductor.process.stop().success());
    assert!(database.process.stop().success());
}

#[test]
fn every_hop_is_traced_into_weft_as_children_of_the_apps_spans() {
    let data = tempfile::tempdir().unwrap();
    let weft = Weft::start(data.path(), &[]);
    let mesh = mesh(
        &format!(
            "mesh: crm\npolicies:\n  tracing: {{backend: '{}', sampling: 1.0}}\n",
            weft.grpc_url()
        ),
        &["crm-database"],
    );
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let app_span = "10f067aa0ba902b7";
    let (status, body) = get_json(
        client()
            .get(mesh.conductor.call("crm-database", "/accounts/9"))
            .header("traceparent", format!("00-{trace_id}-{app_span}-01"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    let seen = body["headers"]["traceparent"].as_str().unwrap().to_string();
    let parent_of_app = seen.split('-').nth(2).unwrap().to_string();

    let sql = format!(
        "SELECT span_id, parent_span_id, kind, service_name, attributes['peer.service'], \
         attributes['weft.mesh.peer_identity'], attributes['http.response.status_code'] \
         FROM spans WHERE trace_id = '{trace_id}' ORDER BY start_time"
    );
    let mut rows = Vec::new();
    eventually("both hops' spans in weft", || {
        rows = weft.sql_rows(&sql);
        rows.len() == 2
    });
    let (client_span, server_span) = (&rows[0], &rows[1]);
    assert_eq!(
        client_span[1], app_span,
        "the caller's sidecar continues the app's trace"
    );
    assert_eq!(client_span[2], "CLIENT");
    assert_eq!(client_span[3], "crm-conductor");
    assert_eq!(client_span[4], "crm-database");
    assert_eq!(client_span[5], "spiffe://crm/crm-database");
    assert_eq!(
        server_span[1], client_span[0],
        "the callee's SERVER span is the CLIENT span's child"
    );
    assert_eq!(server_span[2], "SERVER");
    assert_eq!(server_span[3], "crm-database");
    assert_eq!(server_span[4], "crm-conductor");
    assert_eq!(server_span[5], "spiffe://crm/crm-conductor");
    assert_eq!(server_span[6], "200");
    assert_eq!(
        server_span[0],
        parent_of_app.as_str(),
        "the app's span is the SERVER span's child"
    );

    let logs_sql = format!(
        "SELECT service_name, span_id, body FROM logs WHERE trace_id = '{trace_id}' ORDER BY service_name"
    );
    let mut logs = Vec::new();
    eventually("an access log per hop", || {
        logs = weft.sql_rows(&logs_sql);
        logs.len() == 2
    });
    assert_eq!(logs[0][0], "crm-conductor");
    assert_eq!(logs[0][1], client_span[0]);
    assert_eq!(logs[1][0], "crm-database");
    assert_eq!(logs[1][1], server_span[0]);
    assert!(logs[1][2]
        .as_str()
        .unwrap()
        .contains("\"GET /accounts/9\" 200"));
    assert!(weft.stop().success());
}

#[test]
fn tcp_streams_are_tunnelled_and_permissions_apply_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let control_plane = ControlPlane::start(dir.path(), MESH);
    let cache_app = tcp_echo_app();
    let cache = Sidecar::start(&control_plane, "crm-cache", cache_app.addr, "tcp", &[]);
    let (conductor, _conductor_app) = conductor(&control_plane, &["crm-cache"]);
    let roundtrip = |payload: &[u8]| -> Vec<u8> {
        let mut stream = std::net::TcpStream::connect(conductor.outbound["crm-cache"]).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // A connection the sidecar refuses may be closed before the write or
        // the shutdown: what comes back is what tells.
        let _ = stream.write_all(payload);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    };
    let payload = b"SET account:42 ACME\r\n".repeat(1000);
    eventually("bytes through the tunnel", || {
        roundtrip(&payload) == payload
    });

    control_plane.put_policies("traffic_permissions: {enabled: true}");
    eventually("the connection refused", || {
        roundtrip(b"PING\r\n").is_empty()
    });
    eventually("the denial in the callee's log", || {
        cache.process.log().contains("TCP connection denied")
    });
}

/// A WebSocket app: echoes every text message back.
fn websocket_echo_app() -> App {
    use futures::{SinkExt, StreamExt};
    App::serve(|listener| async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

#[test]
fn websockets_cross_the_mesh_and_permissions_apply_to_them() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Error, Message};
    let dir = tempfile::tempdir().unwrap();
    let control_plane = ControlPlane::start(dir.path(), MESH);
    let feed_app = websocket_echo_app();
    let _feed = Sidecar::start(&control_plane, "crm-feed", feed_app.addr, "http", &[]);
    let (conductor, _conductor_app) = conductor(&control_plane, &["crm-feed"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("ws://{}/live/opportunities", conductor.outbound["crm-feed"]);
    // The echoed messages, or the status the handshake was refused with.
    let exchange = || -> Result<Vec<String>, Option<u16>> {
        runtime.block_on(async {
            let (mut ws, response) = match tokio_tungstenite::connect_async(&url).await {
                Ok(connected) => connected,
                Err(Error::Http(response)) => return Err(Some(response.status().as_u16())),
                Err(_) => return Err(None),
            };
            assert_eq!(response.status(), 101);
            let mut echoed = Vec::new();
            for text in ["opportunity 1 won", "opportunity 2 lost"] {
                ws.send(Message::text(text)).await.map_err(|_| None)?;
                let message = ws.next().await.ok_or(None)?.map_err(|_| None)?;
                echoed.push(message.into_text().map_err(|_| None)?.to_string());
            }
            let _ = ws.close(None).await;
            Ok(echoed)
        })
    };
    eventually("messages both ways through the mesh", || {
        exchange()
            == Ok(vec![
                "opportunity 1 won".into(),
                "opportunity 2 lost".into(),
            ])
    });

    control_plane.put_policies("traffic_permissions: {enabled: true}");
    eventually("the handshake refused by the callee's sidecar", || {
        exchange() == Err(Some(403))
    });
}

#[test]
fn calls_stay_in_their_zone_and_cross_to_another_only_when_it_has_no_sidecar_left() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = "mesh: crm\npolicies:\n  retries:\n    - { to: crm-database, attempts: 1 }\n";
    let control_plane = ControlPlane::start(dir.path(), yaml);
    let near_app = echo_app("database in zone-a");
    let far_app = echo_app("database in zone-b");
    let near = Sidecar::start_in_zone(&control_plane, "crm-database", near_app.addr, &[], "zone-a");
    let _far = Sidecar::start_in_zone(&control_plane, "crm-database", far_app.addr, &[], "zone-b");
    let conductor_app = echo_app("crm-conductor");
    let conductor = Sidecar::start_in_zone(
        &control_plane,
        "crm-conductor",
        conductor_app.addr,
        &["crm-database"],
        "zone-a",
    );
    eventually("the conductor's sidecar to learn both zones", || {
        conductor.admin_json("/config")["services"]["crm-database"]["zones"]
            .as_object()
            .is_some_and(|zones| zones.len() == 2)
    });
    let zones: Vec<String> = control_plane
        .dataplanes()
        .iter()
        .map(|dp| format!("{} {}", dp["service"], dp["zone"]))
        .collect();
    assert!(
        zones.contains(&r#""crm-database" "zone-b""#.to_string()),
        "{zones:?}"
    );

    let c = client();
    let answered_by = || {
        let response = c
            .get(conductor.call("crm-database", "/accounts"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<serde_json::Value>().unwrap()["app"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for _ in 0..20 {
        assert_eq!(answered_by(), "database in zone-a");
    }

    // Zone a loses its database: calls cross to zone b, and none fails, even
    // before the control plane notices (the retry goes to the far endpoint).
    near.process.stop();
    for _ in 0..20 {
        assert_eq!(answered_by(), "database in zone-b");
    }
}

/// `weft mesh sidecar` with `args` (an app on port 9): it must fail at
/// start; what it said on stderr.
fn sidecar_refuses(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "sidecar"])
        .args(args)
        .args(["--app", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_busy_port_or_a_bad_flag_stops_the_sidecar_with_the_reason() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let stderr = sidecar_refuses(&["--service", "crm-database", "--inbound", &busy]);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("the inbound listener"),
        "{stderr}"
    );

    let stderr = sidecar_refuses(&["--service", "crm database", "--inbound", "127.0.0.1:0"]);
    assert!(stderr.contains("is not a service name"), "{stderr}");

    let stderr = sidecar_refuses(&[
        "--service",
        "crm-database",
        "--zone",
        "eu west",
        "--inbound",
        "127.0.0.1:0",
    ]);
    assert!(
        stderr.contains(r#"--zone "eu west" is not a zone name"#),
        "{stderr}"
    );

    let stderr = sidecar_refuses(&[
        "--service",
        "crm-database",
        "--workers",
        "0",
        "--inbound",
        "127.0.0.1:0",
    ]);
    assert!(
        stderr.contains("--workers") && stderr.contains("0 is not in 1..=65535"),
        "{stderr}"
    );
}

/// A new key and the control plane's answer to its CSR for `service`,
/// asked with `token`.
fn certificate_request(
    control_plane: &ControlPlane,
    service: &str,
    token: Option<&str>,
) -> (rcgen::KeyPair, (u16, serde_json::Value)) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut request = client()
        .post(control_plane.url("/sidecar/v1/certificate"))
        .json(&serde_json::json!({"service": service, "csr": csr}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    (key, get_json(request.send().unwrap()))
}

/// The status and message of a CSR for `service` asked with `token`.
fn ask_for_certificate(
    control_plane: &ControlPlane,
    service: &str,
    token: Option<&str>,
) -> (u16, String) {
    let (_, (status, body)) = certificate_request(control_plane, service, token);
    let message = body["message"].as_str().unwrap_or_default().to_string();
    (status, message)
}

#[test]
fn sidecars_need_a_token_of_their_own_service_and_revoked_tokens_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let control_plane = ControlPlane::start(
        dir.path(),
        "mesh: crm\nauthentication: {localhost_is_admin: false}\n",
    );
    let c = client();

    // A sidecar without a token stops at once, saying why.
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "sidecar", "--service", "crm-database"])
        .args(["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9"])
        .args(["--control-plane", &control_plane.url("")])
        .env_remove("WEFT_SIDECAR_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("weft mesh token create"),
        "{stderr}"
    );

    // Certificates only for the token's own service.
    let (database_id, database_token) = control_plane.token(&["--service", "crm-database"]);
    let (status, message) = ask_for_certificate(&control_plane, "crm-database", None);
    assert_eq!(status, 401, "{message}");
    let (status, message) =
        ask_for_certificate(&control_plane, "crm-database", Some("weftmesh_guess"));
    assert_eq!(status, 401, "{message}");
    assert!(message.contains("not valid"), "{message}");
    let (status, message) =
        ask_for_certificate(&control_plane, "crm-payments", Some(&database_token));
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("crm-database") && message.contains("crm-payments"),
        "{message}"
    );
    let (status, message) =
        ask_for_certificate(&control_plane, "crm-database", Some(&database_token));
    assert_eq!(status, 200, "{message}");
    let response = c
        .get(control_plane.url("/sidecar/v1/config"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));

    // A registration for another service, or over another service's instance.
    let registration = |service: &str| {
        serde_json::json!({
            "service": service, "address": "127.0.0.1:1", "protocol": "http",
            "certificate_not_after": 0, "config_version": "",
        })
    };
    let register = |id: &str, service: &str, token: &str| {
        c.put(control_plane.url(&format!("/sidecar/v1/dataplanes/{id}")))
            .bearer_auth(token)
            .json(&registration(service))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(register("db-1", "crm-payments", &database_token), 403);
    assert_eq!(register("db-1", "crm-database", &database_token), 204);
    let payments_token = control_plane.sidecar_token("crm-payments");
    assert_eq!(register("db-1", "crm-payments", &payments_token), 409);

    // Policies: an admin token, not a sidecar's (loopback is no admin here).
    let put_policies = |token: Option<&str>| {
        let mut request = c
            .put(control_plane.url("/policies"))
            .body("traffic_permissions: {enabled: true}");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().unwrap().status()
    };
    assert_eq!(put_policies(None), 401);
    assert_eq!(put_policies(Some(&database_token)), 403);
    let (_, admin_token) = control_plane.token(&["--admin", "--name", "ops"]);
    assert_eq!(put_policies(Some(&admin_token)), 200);
    let (status, message) = ask_for_certificate(&control_plane, "crm-database", Some(&admin_token));
    assert_eq!(status, 403, "an admin token is not a sidecar's: {message}");

    // The list shows ids and services, never the tokens.
    let list = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "token", "list", "--state-dir"])
        .arg(&control_plane.state_dir)
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.contains(&database_id) && list.contains("crm-database") && list.contains("ops"),
        "{list}"
    );
    assert!(!list.contains(&database_token) && !list.contains(&admin_token));

    // A running sidecar whose token is revoked: the control plane refuses
    // it within seconds, and it keeps serving with what it has.
    let app = echo_app("crm-database");
    let mut sidecar = Sidecar::start_with_token(
        &control_plane,
        "crm-database",
        app.addr,
        "http",
        &[],
        &database_token,
        &[],
    );
    let status = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "token", "revoke", &database_id, "--state-dir"])
        .arg(&control_plane.state_dir)
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the revoked token to be refused", || {
        ask_for_certificate(&control_plane, "crm-database", Some(&database_token)).0 == 401
    });
    eventually("the sidecar to say so at its next heartbeat", || {
        sidecar
            .process
            .log()
            .contains("refuses this sidecar's token")
    });
    assert!(
        sidecar.process.is_running(),
        "it serves on with what it has"
    );
    assert!(sidecar.process.stop().success());
}
