//! TLS on weft's listeners, end to end: a certificate from files, reloaded
//! when they change; client certificates required on the OTLP receivers
//! when a client CA is configured — with good, expired, wrong-CA and missing
//! client certificates, over gRPC (tonic) and HTTP, with authentication on.

mod support;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use support::*;
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A PEM certificate and its key.
struct Pem {
    cert: String,
    key: String,
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate `ca` issues: for `localhost` as a server, or for a client,
/// valid from `from` to `to` days from now.
fn issue(ca: &Ca, client: bool, from: i64, to: i64) -> Pem {
    issue_for(ca, "localhost", client, from, to)
}

/// A certificate `ca` issues for `name`.
fn issue_for(ca: &Ca, name: &str, client: bool, from: i64, to: i64) -> Pem {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(from);
    params.not_after = now + Duration::days(to);
    Pem {
        cert: params.signed_by(&key, &ca.issuer).unwrap().pem(),
        key: key.serialize_pem(),
    }
}

fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn client_config(ca_pem: &str, identity: Option<&Pem>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in der_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.key.as_bytes())
                .unwrap()
                .unwrap();
            builder
                .with_client_auth_cert(der_certs(&pem.cert), key)
                .unwrap()
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    tls_connect_to(addr, config, "localhost").await
}

/// A TLS connection to `addr` asking for (SNI) and verifying `name`.
async fn tls_connect_to(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 request over TLS: the response's status line, or the error
/// that ended the exchange. (In TLS 1.3 a refused client certificate shows up
/// as an alert on the first read, not in the client's handshake.)
async fn https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &str,
) -> Result<String, String> {
    let response = exchange(addr, config, "localhost", request).await?;
    response
        .lines()
        .next()
        .map(str::to_string)
        .filter(|line| line.starts_with("HTTP/"))
        .ok_or_else(|| format!("no HTTP response: {response:?}"))
}

/// Sends `request` over TLS to `name` at `addr` and reads until the close:
/// the whole response, or the error that ended the exchange.
async fn exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    request: &str,
) -> Result<String, String> {
    let mut tls = tls_connect_to(addr, config, name)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn export_request(token: &str) -> String {
    let body = r#"{"resourceSpans":[]}"#;
    format!(
        "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An OTLP/gRPC client whose connections are TLS with `config`.
async fn grpc_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TraceServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let config = config.clone();
            async move {
                let tls = tls_connect(addr, config).await?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(TraceServiceClient::new(channel))
}

fn write(path: &Path, pem: &Pem) {
    // The key first: a reload between the two writes fails on the
    // mismatched pair and keeps the old setup until the certificate lands.
    std::fs::write(path.join("server.key"), &pem.key).unwrap();
    std::fs::write(path.join("server.crt"), &pem.cert).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_speaks_tls_and_otlp_requires_a_client_certificate_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("weft test server CA");
    let client_ca = ca("weft test client CA");
    let stranger_ca = ca("someone else's CA");
    write(dir.path(), &issue(&server_ca, false, -1, 30));
    std::fs::write(dir.path().join("clients.crt"), &client_ca.pem).unwrap();
    let good = issue(&client_ca, true, -1, 30);
    let expired = issue(&client_ca, true, -30, -1);
    let stranger = issue(&stranger_ca, true, -1, 30);

    let data = dir.path().join("data");
    let (token, stderr, _) = {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "token",
                "create",
                "--tenant",
                "acme",
                "--role",
                "admin",
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .unwrap();
        (
            String::from_utf8(output.stdout).unwrap().trim().to_string(),
            String::from_utf8(output.stderr).unwrap(),
            output.status,
        )
    };
    assert!(token.starts_with("weft_"), "{stderr}");
    let pem = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let weft = tokio::task::block_in_place(|| {
        Weft::start(
            &data,
            &[
                "--auth",
                "--tls-cert-file",
                &pem("server.crt"),
                "--tls-key-file",
                &pem("server.key"),
                "--tls-client-ca-file",
                &pem("clients.crt"),
            ],
        )
    });

    // OTLP/HTTP: only a current certificate from the client CA gets in.
    let otlp = |identity: Option<&Pem>| client_config(&server_ca.pem, identity, b"http/1.1");
    let ok = https(weft.otlp_http, otlp(Some(&good)), &export_request(&token)).await;
    assert_eq!(ok.as_deref(), Ok("HTTP/1.1 200 OK"));
    for (what, identity) in [
        ("no client certificate", None),
        ("an expired one", Some(&expired)),
        ("one from another CA", Some(&stranger)),
    ] {
        let refused = https(weft.otlp_http, otlp(identity), &export_request(&token)).await;
        assert!(refused.is_err(), "{what} got in: {refused:?}");
    }
    // A client that does not trust weft's CA does not talk to it either.
    let distrustful = client_config(&stranger_ca.pem, Some(&good), b"http/1.1");
    assert!(https(weft.otlp_http, distrustful, &export_request(&token))
        .await
        .is_err());
    // Plain text on a TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(weft.otlp_http).await.unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // OTLP/gRPC over TLS (HTTP/2 by ALPN), with the token in the metadata.
    let spans = spans_request("crm-tls", 0..3);
    let mut request = tonic::Request::new(spans.clone());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut client = grpc_client(
        weft.otlp_grpc,
        client_config(&server_ca.pem, Some(&good), b"h2"),
    )
    .await
    .unwrap();
    client.export(request).await.unwrap();
    let refused =
        match grpc_client(weft.otlp_grpc, client_config(&server_ca.pem, None, b"h2")).await {
            Err(e) => Err(e.to_string()),
            Ok(mut client) => client
                .export(tonic::Request::new(spans))
                .await
                .map(|_| ())
                .map_err(|status| status.to_string()),
        };
    assert!(refused.is_err(), "gRPC without a client certificate got in");

    // The API and UI need no client certificate, only TLS and a token.
    let api = client_config(&server_ca.pem, None, b"http/1.1");
    let services = format!(
        "GET /api/v1/services HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(
        https(weft.http, api.clone(), &services).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    // `weft sql` reaches the TLS API when told which CA to trust.
    let ca_file = dir.path().join("server-ca.crt");
    std::fs::write(&ca_file, &server_ca.pem).unwrap();
    let server = format!("https://localhost:{}", weft.http.port());
    let output = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args([
                "sql", "--format", "csv", "--server", &server, "--token", &token,
            ])
            .arg("--ca-file")
            .arg(&ca_file)
            .arg("SELECT count(*) AS n FROM spans")
            .output()
            .unwrap()
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "n\n3\n");

    // A renewed certificate is served without a restart.
    let renewed = issue(&server_ca, false, -1, 60);
    write(dir.path(), &renewed);
    let renewed_der = der_certs(&renewed.cert).remove(0);
    let mut served = None;
    for _ in 0..100 {
        let tls = tls_connect(weft.http, api.clone()).await.unwrap();
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        if presented == renewed_der {
            served = Some(presented);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        served.is_some(),
        "the renewed certificate was not served within 10 s"
    );
    assert_eq!(
        https(weft.http, api, &services).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );
    assert!(!weft.log().contains(&token));
}

/// The gateway's Admin API and the mesh control plane's API serve TLS from
/// files too, and a sidecar fetches its identity and config from an
/// https:// control plane it verifies with `--control-plane-ca`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_admin_api_and_the_mesh_control_plane_speak_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("weft test server CA");
    write(dir.path(), &issue(&server_ca, false, -1, 30));
    std::fs::write(dir.path().join("ca.crt"), &server_ca.pem).unwrap();
    std::fs::write(dir.path().join("gateway.yaml"), "services: []\n").unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let tls = ["--tls-cert-file", "--tls-key-file"];
    let files = [file("server.crt"), file("server.key")];

    let (_gateway, line) = start_gateway(
        &file("gateway.yaml"),
        &[
            "--admin-tls-cert-file",
            &files[0],
            "--admin-tls-key-file",
            &files[1],
        ],
    );
    let admin = logged_addr(&line, "admin");
    let trusting = client_config(&server_ca.pem, None, b"http/1.1");
    let status = "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(
        https(admin, trusting.clone(), status).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    let mut control_plane = std::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    control_plane
        .args([
            "mesh",
            "control-plane",
            "--addr",
            "127.0.0.1:0",
            "--state-dir",
            &file("state"),
        ])
        .args([tls[0], &files[0], tls[1], &files[1]])
        .env("WEFT_LOG", "info");
    let (_control_plane, line) =
        tokio::task::block_in_place(|| Process::spawn(control_plane, "control-plane"));
    let cp = logged_addr(&line, "addr");
    let overview = "GET /dataplanes HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(
        https(cp, trusting.clone(), overview).await.as_deref(),
        Ok("HTTP/1.1 200 OK")
    );

    let token = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "token", "create", "--service", "crm-database"])
        .args(["--state-dir", &file("state")])
        .output()
        .unwrap();
    assert!(token.status.success());
    let mut sidecar = std::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    sidecar
        .args(["mesh", "sidecar", "--service", "crm-database"])
        .env(
            "WEFT_SIDECAR_TOKEN",
            String::from_utf8(token.stdout).unwrap().trim(),
        )
        .args(["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9"])
        .args([
            "--control-plane",
            &format!("https://localhost:{}", cp.port()),
        ])
        .args(["--control-plane-ca", &file("ca.crt")])
        .env("WEFT_LOG", "info");
    let (_sidecar, line) = tokio::task::block_in_place(|| Process::spawn(sidecar, "sidecar"));
    assert!(line.contains("spiffe://default/crm-database"), "{line}");

    // A sidecar that does not say which CA to trust is told so at once.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["mesh", "sidecar", "--service", "crm-mobile"])
        .args(["--inbound", "127.0.0.1:0", "--app", "127.0.0.1:9"])
        .args([
            "--control-plane",
            &format!("https://localhost:{}", cp.port()),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--control-plane-ca"), "{stderr}");
}

/// `weft gateway --config <config>` with its proxy and admin listeners on
/// free ports, plus `extra` flags, and its "listening" line.
fn start_gateway(config: &str, extra: &[&str]) -> (Process, String) {
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    gateway
        .args(["gateway", "--config", config])
        .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .args(extra)
        .env("WEFT_LOG", "info");
    tokio::task::block_in_place(|| Process::spawn(gateway, "gateway"))
}

/// A backend serving HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a certificate
/// for `localhost` from `pem`, requiring client certificates from
/// `client_ca_file` if given; it answers with what it saw.
async fn https_backend(
    dir: &Path,
    pem: &Pem,
    client_ca_file: Option<std::path::PathBuf>,
) -> SocketAddr {
    std::fs::write(dir.join("backend.crt"), &pem.cert).unwrap();
    std::fs::write(dir.join("backend.key"), &pem.key).unwrap();
    let tls = weft_access::tls::ServerTls::load(
        weft_access::tls::TlsFiles {
            cert_file: dir.join("backend.crt"),
            key_file: dir.join("backend.key"),
            client_ca_file,
        },
        &[b"h2", b"http/1.1"],
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let incoming = weft_access::tls::Incoming::new(listener, Some(&tls), "backend").unwrap();
    let addr = incoming.local_addr().unwrap();
    let app = axum::Router::new().fallback(
        |version: axum::http::Version, uri: axum::http::Uri, headers: axum::http::HeaderMap| async move {
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            format!("backend saw {version:?} {} forwarded-proto={proto}", uri.path())
        },
    );
    tokio::spawn(async move {
        let _tls = tls;
        incoming.serve(app, std::future::pending()).await
    });
    addr
}

/// One HTTP/1.1 `GET path` over TLS to `name` at `addr`: the whole response.
async fn https_to(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    path: &str,
) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    exchange(addr, config, name, &request).await
}

/// The gateway's HTTPS listener serves the certificate the client's SNI
/// names (the default one otherwise), speaks HTTP/2 by ALPN, and reaches
/// `https://` services over TLS verified against their CA file — refusing
/// a target the system's CAs do not vouch for, unless told not to verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_terminates_https_by_sni_and_reaches_https_targets() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let edge_ca = ca("weft test edge CA");
    let api = issue_for(&edge_ca, "api.example.com", false, -1, 30);
    let default = issue(&edge_ca, false, -1, 30);
    for (name, pem) in [("api", &api), ("default", &default)] {
        std::fs::write(file(&format!("{name}.crt")), &pem.cert).unwrap();
        std::fs::write(file(&format!("{name}.key")), &pem.key).unwrap();
    }
    let backend_ca = ca("weft test backend CA");
    std::fs::write(file("backend-ca.crt"), &backend_ca.pem).unwrap();
    let backend = https_backend(dir.path(), &issue(&backend_ca, false, -1, 30), None).await;
    let port = backend.port();
    std::fs::write(
        file("gateway.yaml"),
        format!(
            "certificates:
  - {{cert_file: '{api_crt}', key_file: '{api_key}', snis: [api.example.com]}}
  - {{cert_file: '{default_crt}', key_file: '{default_key}'}}
services:
  - name: verified
    url: https://localhost:{port}/v
    tls_ca_file: '{backend_ca}'
    routes: [{{name: verified, paths: [/verified]}}]
  - name: untrusted
    url: https://localhost:{port}
    routes: [{{name: untrusted, paths: [/untrusted]}}]
  - name: unverified
    url: https://127.0.0.1:{port}
    tls_verify: false
    routes: [{{name: unverified, paths: [/unverified]}}]
",
            api_crt = file("api.crt"),
            api_key = file("api.key"),
            default_crt = file("default.crt"),
            default_key = file("default.key"),
            backend_ca = file("backend-ca.crt"),
        ),
    )
    .unwrap();
    let (_gateway, line) =
        start_gateway(&file("gateway.yaml"), &["--proxy-tls-addr", "127.0.0.1:0"]);
    let proxy_tls = logged_addr(&line, "proxy_tls");
    let trusting = client_config(&edge_ca.pem, None, b"http/1.1");

    // api.example.com gets its own certificate (the default one, for
    // localhost, would not verify for that name), and the backend sees
    // HTTP/2 over TLS with the client's scheme forwarded.
    let answer = https_to(
        proxy_tls,
        trusting.clone(),
        "api.example.com",
        "/verified/a",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("backend saw HTTP/2.0 /v/a forwarded-proto=https"),
        "{answer}"
    );
    let answer = https_to(proxy_tls, trusting.clone(), "localhost", "/unverified")
        .await
        .unwrap();
    assert!(
        answer.contains("backend saw HTTP/2.0 / forwarded-proto=https"),
        "{answer}"
    );
    let answer = https_to(proxy_tls, trusting.clone(), "localhost", "/untrusted")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    // A name no certificate lists gets the default, which does not verify for it.
    let wrong = https_to(proxy_tls, trusting, "www.example.org", "/verified").await;
    assert!(wrong.is_err(), "{wrong:?}");

    // HTTP/2 to the gateway, by ALPN.
    let h2 = client_config(&edge_ca.pem, None, b"h2");
    let tls = tls_connect_to(proxy_tls, h2, "api.example.com")
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // A new configuration swaps the certificates for new handshakes: with
    // api.example.com's now from another CA, a client of the old CA refuses it.
    let admin = logged_addr(&line, "admin");
    let admin_api = reqwest::Client::new();
    let other_ca = ca("weft test other CA");
    let replaced = issue_for(&other_ca, "api.example.com", false, -1, 30);
    let yaml = |certificates: &str| {
        format!(
            "{certificates}services:\n  - name: unverified\n    url: https://127.0.0.1:{port}\n    tls_verify: false\n    routes: [{{name: unverified, paths: [/unverified]}}]\n"
        )
    };
    let certificates = format!(
        "certificates:\n  - cert: {:?}\n    key: {:?}\n    snis: [api.example.com]\n",
        replaced.cert, replaced.key
    );
    let post = |body: String| {
        admin_api
            .post(format!("http://{admin}/config"))
            .body(body)
            .send()
    };
    let applied = post(yaml(&certificates)).await.unwrap();
    assert_eq!(applied.status(), 200, "{}", applied.text().await.unwrap());
    let old_ca = client_config(&edge_ca.pem, None, b"http/1.1");
    assert!(
        https_to(proxy_tls, old_ca, "api.example.com", "/unverified")
            .await
            .is_err()
    );
    let new_ca = client_config(&other_ca.pem, None, b"http/1.1");
    let answer = https_to(proxy_tls, new_ca, "api.example.com", "/unverified")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Without certificates the open HTTPS listener could not serve: refused.
    let refused = post(yaml("")).await.unwrap();
    assert_eq!(refused.status(), 400);
    let message = refused.text().await.unwrap();
    assert!(
        message.contains("certificates") && message.contains("HTTPS"),
        "{message}"
    );
}

/// Over object storage a querier reads the unflushed rows of a collector
/// with TLS on its OTLP port (Arrow Flight over https), verifying it with
/// `--collector-ca-file`; without that CA it does not trust the collector
/// and answers from the flushed segments alone.
#[test]
fn a_querier_reads_unflushed_rows_from_a_collector_with_tls() {
    querier_reads_unflushed_rows_over_tls(false);
}

/// A collector that requires client certificates on OTLP (`--tls-client-ca-file`)
/// serves its unflushed rows to a querier presenting one
/// (`--collector-cert-file`, `--collector-key-file`), and to no other.
#[test]
fn a_querier_presents_a_client_certificate_to_a_collector_that_requires_one() {
    querier_reads_unflushed_rows_over_tls(true);
}

fn querier_reads_unflushed_rows_over_tls(client_certificates: bool) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("weft test CA");
    // The collector advertises its address as https://127.0.0.1:<port>.
    write(dir.path(), &issue_for(&ca, "127.0.0.1", false, -1, 30));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let client = issue(&ca, true, -1, 30);
    let (client_cert, client_key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&client_cert, &client.cert).unwrap();
    std::fs::write(&client_key, &client.key).unwrap();
    let bucket = format!("file://{}/bucket", dir.path().display());
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let mut collector_args = vec![
        "--storage",
        &bucket,
        "--flush-interval",
        "1h",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
    ];
    if client_certificates {
        collector_args.extend(["--tls-client-ca-file", ca_file.to_str().unwrap()]);
    }
    let collector = Weft::start_role("collector", &dir.path().join("collector"), &collector_args);
    let mut https = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap());
    if client_certificates {
        let identity = format!("{}{}", client.cert, client.key);
        https = https.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
    }
    send_spans(
        https.build().unwrap().post(format!(
            "https://127.0.0.1:{}/v1/traces",
            collector.otlp_http.port()
        )),
        &spans_request("crm-mobile", 0..12),
    );

    let spans_seen = |extra: &[&str]| {
        let args = [&["--storage", bucket.as_str()], extra].concat();
        let querier = Weft::start_role("query", &dir.path().join("querier"), &args);
        let count = querier.sql_rows("SELECT count(*) FROM spans")[0][0]
            .as_i64()
            .unwrap();
        assert!(querier.stop().success());
        count
    };
    let with_ca = ["--collector-ca-file", ca_file.to_str().unwrap()];
    let with_client_certificate = [
        &with_ca[..],
        &[
            "--collector-cert-file",
            client_cert.to_str().unwrap(),
            "--collector-key-file",
            client_key.to_str().unwrap(),
        ],
    ]
    .concat();
    assert_eq!(spans_seen(&with_client_certificate), 12);
    assert_eq!(
        spans_seen(&with_ca),
        if client_certificates { 0 } else { 12 }
    );
    assert_eq!(spans_seen(&[]), 0);

    // `weft sql --storage` reads them as a querier does, with the same flags.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["sql", "--format", "csv", "--storage", &bucket, "--ca-file"])
        .arg(&ca_file)
        .arg("--collector-cert-file")
        .arg(&client_cert)
        .arg("--collector-key-file")
        .arg(&client_key)
        .arg("--data-dir")
        .arg(dir.path().join("sql"))
        .arg("SELECT count(*) AS spans FROM spans")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "spans\n12\n");
    assert!(collector.stop().success());
}

/// A service with `tls_client_cert_file` presents that certificate to a
/// target that requires one (mutual TLS); a service without it is refused by
/// the target and answers 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_presents_a_client_certificate_to_targets_that_require_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let backend_ca = ca("weft test backend CA");
    let client_ca = ca("weft test client CA");
    let client = issue(&client_ca, true, -1, 30);
    std::fs::write(file("backend-ca.crt"), &backend_ca.pem).unwrap();
    std::fs::write(file("client-ca.crt"), &client_ca.pem).unwrap();
    std::fs::write(file("client.crt"), &client.cert).unwrap();
    std::fs::write(file("client.key"), &client.key).unwrap();
    let backend = https_backend(
        dir.path(),
        &issue(&backend_ca, false, -1, 30),
        Some(dir.path().join("client-ca.crt")),
    )
    .await;
    let port = backend.port();
    std::fs::write(
        file("gateway.yaml"),
        format!(
            "services:
  - name: mutual
    url: https://localhost:{port}
    tls_ca_file: '{backend_ca}'
    tls_client_cert_file: '{client_crt}'
    tls_client_key_file: '{client_key}'
    routes: [{{name: mutual, paths: [/mutual]}}]
  - name: anonymous
    url: https://localhost:{port}
    tls_ca_file: '{backend_ca}'
    routes: [{{name: anonymous, paths: [/anonymous]}}]
  - name: probed
    url: https://probed
    tls_ca_file: '{backend_ca}'
    tls_client_cert_file: '{client_crt}'
    tls_client_key_file: '{client_key}'
    routes: [{{name: probed, paths: [/probed]}}]
  - name: probed-anonymously
    url: https://probed-anonymously
    tls_ca_file: '{backend_ca}'
    tls_client_cert_file: '{client_crt}'
    tls_client_key_file: '{client_key}'
    routes: [{{name: probed-anonymously, paths: [/probed-anonymously]}}]
upstreams:
  - name: probed
    targets: [{{target: 'localhost:{port}'}}]
    healthchecks:
      active: {{type: https, https_ca_file: '{backend_ca}', https_client_cert_file: '{client_crt}', https_client_key_file: '{client_key}', interval: 100ms, healthy_successes: 1, unhealthy_failures: 2, healthy_statuses: [200]}}
  - name: probed-anonymously
    targets: [{{target: 'localhost:{port}'}}]
    healthchecks:
      active: {{type: https, https_ca_file: '{backend_ca}', interval: 100ms, healthy_successes: 1, unhealthy_failures: 2, healthy_statuses: [200]}}
",
            backend_ca = file("backend-ca.crt"),
            client_crt = file("client.crt"),
            client_key = file("client.key"),
        ),
    )
    .unwrap();
    let (_gateway, line) = start_gateway(&file("gateway.yaml"), &[]);
    let proxy = logged_addr(&line, "proxy");
    let get = |path: &'static str| async move {
        let response = reqwest::get(format!("http://{proxy}{path}")).await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = get("/mutual/a").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("backend saw HTTP/2.0 /a"), "{body}");
    let (status, body) = get("/anonymous").await;
    assert_eq!(status, 502, "{body}");

    // Active https probes present the upstream's client certificate too:
    // without one the target fails its probes and is taken out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while get("/probed-anonymously").await.0 != 503 {
        assert!(std::time::Instant::now() < deadline, "never taken out");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Five more probe rounds: the target probed with the certificate stays in.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (status, body) = get("/probed/b").await;
    assert_eq!(status, 200, "{body}");
}

/// Routes say which protocols reach them, as Kong's `protocols`: plain HTTP
/// to an HTTPS-only route is told to upgrade (426) or redirected to its
/// `https://` URL, and HTTPS does not match an HTTP-only route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_only_the_protocols_they_allow() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let edge_ca = ca("weft test edge CA");
    let edge = issue(&edge_ca, false, -1, 30);
    std::fs::write(file("edge.crt"), &edge.cert).unwrap();
    std::fs::write(file("edge.key"), &edge.key).unwrap();
    let backend_ca = ca("weft test backend CA");
    std::fs::write(file("backend-ca.crt"), &backend_ca.pem).unwrap();
    let backend = https_backend(dir.path(), &issue(&backend_ca, false, -1, 30), None).await;
    std::fs::write(
        file("gateway.yaml"),
        format!(
            "certificates:
  - {{cert_file: '{edge_crt}', key_file: '{edge_key}'}}
services:
  - name: crm
    url: https://localhost:{port}
    tls_ca_file: '{backend_ca}'
    routes:
      - {{name: secure, paths: [/secure], protocols: [https]}}
      - {{name: moved, paths: [/moved], protocols: [https], https_redirect_status_code: 308}}
      - {{name: plain, paths: [/plain], protocols: [http]}}
",
            port = backend.port(),
            edge_crt = file("edge.crt"),
            edge_key = file("edge.key"),
            backend_ca = file("backend-ca.crt"),
        ),
    )
    .unwrap();
    let (_gateway, line) =
        start_gateway(&file("gateway.yaml"), &["--proxy-tls-addr", "127.0.0.1:0"]);
    let (proxy, proxy_tls) = (logged_addr(&line, "proxy"), logged_addr(&line, "proxy_tls"));
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| plain.get(format!("http://{proxy}{path}")).send();
    let tls = client_config(&edge_ca.pem, None, b"http/1.1");

    let upgrade = get("/secure/a").await.unwrap();
    assert_eq!(upgrade.status().as_u16(), 426);
    assert_eq!(upgrade.headers()["upgrade"], "TLS/1.2, HTTP/1.1");
    let answer = https_to(proxy_tls, tls.clone(), "localhost", "/secure/a")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let moved = plain
        .get(format!("http://{proxy}/moved/b?page=2"))
        .header("host", "crm.example.com:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status().as_u16(), 308);
    assert_eq!(
        moved.headers()["location"],
        "https://crm.example.com/moved/b?page=2"
    );

    assert_eq!(get("/plain").await.unwrap().status().as_u16(), 200);
    let answer = https_to(proxy_tls, tls, "localhost", "/plain")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
