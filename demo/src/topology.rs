//! What runs where in `weft demo`: every process, its addresses and its
//! arguments, and the gateway and mesh configuration files they read.
//!
//! ```text
//! load ─▶ gateway :8000 ─▶ sidecar(weft-gateway) ═mTLS═▶ sidecar ─▶ crm-mobile
//!                    ─▶ sidecar ═▶ sidecar ─▶ crm-conductor ─▶ sidecar ═▶ sidecar ─▶ crm-salesforce
//!                                                          └▶ sidecar ═▶ sidecar ─▶ crm-database
//! ```
//!
//! The gateway stands in the mesh like any service (Kuma's delegated
//! gateway): its own sidecar opens the mTLS hop to `crm-mobile`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::fault::Fault;
use crate::services::CrmService;

/// The gateway's name in the mesh and in traces.
pub const GATEWAY: &str = "weft-gateway";
/// The mesh's name: identities are `spiffe://crm/<service>`.
pub const MESH: &str = "crm";
/// Requests a second the gateway lets the demo's consumer make.
pub const RATE_LIMIT: u32 = 20_000;
/// The API key the load generator (the "mobile app") presents to the gateway.
pub const API_KEY: &str = "demo-key";

/// The addresses a user sees (all configurable).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub http: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    pub control_plane: SocketAddr,
}

/// Every process of the demo and how they reach each other.
#[derive(Debug, Clone)]
pub struct Topology {
    pub ports: Ports,
    /// The directory everything is kept in: `data/` (weft's store), `mesh/`
    /// (the mesh CA), `config/` (the generated gateway and mesh files).
    pub dir: PathBuf,
    /// The plain-text port of each app (its sidecar's `--app`).
    pub apps: BTreeMap<CrmService, SocketAddr>,
    /// Each mesh member's mTLS inbound listener (the gateway has none in use,
    /// but every sidecar needs one).
    pub inbound: BTreeMap<&'static str, SocketAddr>,
    /// (caller, callee) → the caller's sidecar's outbound listener for the callee.
    pub outbound: BTreeMap<(&'static str, CrmService), SocketAddr>,
    /// Each sidecar's admin API.
    pub sidecar_admin: BTreeMap<&'static str, SocketAddr>,
}

/// One process to start, in order.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    /// Short name for log prefixes: `crm-database`, `sidecar crm-database`, …
    pub name: String,
    /// Arguments to the `weft` binary.
    pub args: Vec<String>,
    /// Answers 200 once the process is ready.
    pub ready_url: String,
    /// The addresses it listens on.
    pub listens: Vec<SocketAddr>,
}

impl Topology {
    /// `free_port` gives a free loopback address for each internal listener.
    pub fn new(ports: Ports, dir: &Path, mut free_port: impl FnMut() -> SocketAddr) -> Self {
        let members = std::iter::once(GATEWAY).chain(CrmService::ALL.iter().map(|s| s.name()));
        let mut outbound = BTreeMap::new();
        outbound.insert((GATEWAY, CrmService::Mobile), free_port());
        for caller in CrmService::ALL {
            for &callee in caller.callees() {
                outbound.insert((caller.name(), callee), free_port());
            }
        }
        Self {
            ports,
            dir: dir.to_path_buf(),
            apps: CrmService::ALL.iter().map(|&s| (s, free_port())).collect(),
            inbound: members.clone().map(|m| (m, free_port())).collect(),
            outbound,
            sidecar_admin: members.map(|m| (m, free_port())).collect(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    pub fn mesh_config_path(&self) -> PathBuf {
        self.config_dir().join("mesh.yaml")
    }

    pub fn gateway_config_path(&self) -> PathBuf {
        self.config_dir().join("gateway.yaml")
    }

    /// The mesh control plane's state dir (CA, tokens, registry).
    pub fn mesh_state_dir(&self) -> PathBuf {
        self.dir.join("mesh")
    }

    /// Every service with a sidecar: the gateway and the CRM services.
    pub fn mesh_members(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inbound.keys().copied()
    }

    /// The file holding `member`'s dataplane token (its sidecar's `--token-file`).
    pub fn token_path(&self, member: &str) -> PathBuf {
        self.config_dir().join(format!("{member}.token"))
    }

    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}", self.ports.otlp_grpc)
    }

    /// The URL the load generator and users call: the gateway's proxy port.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.ports.gateway)
    }

    /// The app port of a service: where faults are switched.
    pub fn app_url(&self, service: CrmService) -> String {
        format!("http://{}", self.apps[&service])
    }

    /// The processes in start order: each one's dependencies come before it.
    pub fn processes(&self, faults: &[Fault]) -> Vec<ProcessPlan> {
        let mut plans = vec![ProcessPlan {
            name: "control-plane".into(),
            args: strings([
                "mesh",
                "control-plane",
                "--config",
                &self.mesh_config_path().display().to_string(),
                "--addr",
                &self.ports.control_plane.to_string(),
            ]),
            ready_url: format!("http://{}/", self.ports.control_plane),
            listens: vec![self.ports.control_plane],
        }];
        // Callees first, so a caller's first requests find them.
        for service in CrmService::ALL.into_iter().rev() {
            let mut args = strings([
                "demo",
                "service",
                service.name(),
                "--listen",
                &self.apps[&service].to_string(),
                "--otlp-endpoint",
                &self.otlp_endpoint(),
            ]);
            for &callee in service.callees() {
                args.push("--callee".into());
                args.push(format!(
                    "{callee}=http://{}",
                    self.outbound[&(service.name(), callee)]
                ));
            }
            for fault in faults.iter().filter(|f| f.service == service) {
                args.push("--fault".into());
                args.push(fault.to_string());
            }
            plans.push(ProcessPlan {
                name: service.name().into(),
                args,
                ready_url: format!("http://{}/health", self.apps[&service]),
                listens: vec![self.apps[&service]],
            });
        }
        for service in CrmService::ALL.into_iter().rev() {
            let callees: Vec<String> = service
                .callees()
                .iter()
                .map(|&callee| format!("{callee}={}", self.outbound[&(service.name(), callee)]))
                .collect();
            plans.push(self.sidecar(service.name(), self.apps[&service], &callees));
        }
        // The gateway's sidecar has no app behind it; its inbound forwards to
        // the gateway's proxy port, which nothing in the mesh calls.
        plans.push(self.sidecar(
            GATEWAY,
            self.ports.gateway,
            &[format!(
                "{}={}",
                CrmService::Mobile,
                self.outbound[&(GATEWAY, CrmService::Mobile)]
            )],
        ));
        plans.push(ProcessPlan {
            name: "gateway".into(),
            args: strings([
                "gateway",
                "--config",
                &self.gateway_config_path().display().to_string(),
                "--proxy-addr",
                &self.ports.gateway.to_string(),
                "--admin-addr",
                &self.ports.gateway_admin.to_string(),
            ]),
            ready_url: format!("http://{}/status", self.ports.gateway_admin),
            listens: vec![self.ports.gateway, self.ports.gateway_admin],
        });
        plans
    }

    fn sidecar(&self, member: &'static str, app: SocketAddr, outbound: &[String]) -> ProcessPlan {
        let mut args = strings([
            "mesh",
            "sidecar",
            "--service",
            member,
            "--inbound",
            &self.inbound[member].to_string(),
            "--app",
            &app.to_string(),
            "--control-plane",
            &format!("http://{}", self.ports.control_plane),
            "--admin-addr",
            &self.sidecar_admin[member].to_string(),
            "--token-file",
            &self.token_path(member).display().to_string(),
        ]);
        if !outbound.is_empty() {
            args.push("--outbound".into());
            args.push(outbound.join(","));
        }
        let mut listens = vec![self.inbound[member], self.sidecar_admin[member]];
        listens.extend(
            self.outbound
                .iter()
                .filter(|((caller, _), _)| *caller == member)
                .map(|(_, addr)| *addr),
        );
        ProcessPlan {
            name: format!("sidecar {member}"),
            args,
            ready_url: format!("http://{}/", self.sidecar_admin[member]),
            listens,
        }
    }

    /// The mesh: zero trust (only the CRM's real call paths are allowed),
    /// every hop traced into weft, timeouts, and Rego guarding the database.
    pub fn mesh_config(&self) -> String {
        let mut rules = vec![rule(GATEWAY, CrmService::Mobile)];
        for caller in CrmService::ALL {
            for &callee in caller.callees() {
                rules.push(rule(caller.name(), callee));
            }
        }
        format!(
            r#"# Generated by `weft demo`; edit it while the demo runs and the sidecars follow.
mesh: {MESH}
state_dir: {state_dir}
certificates:
  ttl: 1h

policies:
  traffic_permissions:
    enabled: true
    rules:
{rules}
  tracing:
    backend: {backend}
    sampling: 1.0
  timeouts:
    - {{ to: crm-salesforce, connect: 1s, request: 5s }}
    - {{ to: "*", connect: 1s, request: 15s }}
  authorization:
    - name: database-only-for-conductor
      to: crm-database
      rego: |
        package weft.authz
        default allow := false
        allow if input.source.spiffe_id == "spiffe://{MESH}/crm-conductor"
"#,
            state_dir = yaml_string(&self.mesh_state_dir().display().to_string()),
            rules = rules.join("\n"),
            backend = self.otlp_endpoint(),
        )
    }

    /// The gateway: `/api` to `crm-mobile` (through its sidecar) behind key
    /// auth and a per-consumer rate limit (`RATE_LIMIT` a second: above
    /// what the demo sends on two cores, so a 429 means someone hammered it).
    pub fn gateway_config(&self) -> String {
        format!(
            r#"# Generated by `weft demo`.
telemetry:
  otlp_endpoint: {otlp}
  service_name: {GATEWAY}
  sampling: 1.0

consumers:
  - username: crm-mobile-app
    keyauth_credentials: [{{key: {API_KEY}}}]

plugins:
  - name: correlation-id
    config: {{header_name: X-Request-Id, echo_downstream: true}}

services:
  - name: crm-mobile
    url: http://{mobile}
    connect_timeout: 2s
    read_timeout: 30s
    retries: 0
    plugins:
      - name: rate-limiting
        config: {{second: {RATE_LIMIT}, limit_by: consumer}}
    routes:
      - name: mobile-api
        paths: [/api]
        strip_path: false        # crm-mobile serves /api/... itself
        plugins:
          - name: key-auth
            config: {{key_names: [apikey], hide_credentials: true}}
"#,
            otlp = self.otlp_endpoint(),
            mobile = self.outbound[&(GATEWAY, CrmService::Mobile)],
        )
    }
}

fn rule(from: &str, to: CrmService) -> String {
    format!("      - {{ name: {from}-to-{to}, from: {from}, to: {to}, action: allow }}")
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.into_iter().map(String::from).collect()
}
