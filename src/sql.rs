//! `weft sql "SELECT …"`: one query, printed as a table, CSV or JSON. With
//! `--server` it goes to a running weft's `POST /api/v1/sql` (as an Arrow IPC
//! stream, printed here); without, it runs in this process over the data
//! directory, read-only, beside whatever weft writes it. `--token` (or
//! `WEFT_TOKEN`) authenticates to a server started with `--auth`;
//! `--tenant` picks a tenant's data in a data directory. With `--storage` it
//! reads the segments every collector wrote to an object store, caching them
//! in the data directory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::{Args, ValueEnum};
use weft_query::{format, QueryConfig, QueryEngine};
use weft_store::object_storage::DEFAULT_CACHE_BYTES;
use weft_store::{ObjectStorage, StoreReader, TenantId};

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The SQL query, over the tables `spans` and `logs`.
    pub query: String,
    /// Base URL of a running weft, e.g. http://127.0.0.1:16686; without it the
    /// query runs on the data directory.
    #[arg(long, env = "WEFT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Data directory to query when no server is given.
    #[arg(
        long,
        env = "WEFT_DATA_DIR",
        value_name = "DIR",
        default_value = "./weft-data"
    )]
    pub data_dir: PathBuf,
    /// A token with the read role, for a server started with --auth (with --storage: for the collectors' unflushed rows).
    #[arg(long, env = "WEFT_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate(s) to verify an https:// server with (with --storage: collectors with TLS).
    #[arg(long, env = "WEFT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// With --storage: PEM client certificate (chain) for collectors that
    /// require one (--tls-client-ca-file); needs --collector-key-file.
    #[arg(
        long,
        env = "WEFT_COLLECTOR_CERT_FILE",
        value_name = "FILE",
        requires_all = ["storage", "collector_key_file"]
    )]
    pub collector_cert_file: Option<PathBuf>,
    /// The private key of --collector-cert-file, PEM.
    #[arg(
        long,
        env = "WEFT_COLLECTOR_KEY_FILE",
        value_name = "FILE",
        requires_all = ["storage", "collector_cert_file"]
    )]
    pub collector_key_file: Option<PathBuf>,
    /// Query the segments in this object store (as `weft query --storage`),
    /// caching them in the data directory.
    #[arg(
        long,
        env = "WEFT_STORAGE",
        value_name = "URL",
        conflicts_with = "server"
    )]
    pub storage: Option<String>,
    /// Whose data to query in the data directory [default: the default tenant].
    /// (A server answers for the token's tenant.)
    #[arg(long, value_name = "TENANT", conflicts_with = "server")]
    pub tenant: Option<TenantId>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let (schema, batches, truncated) = match &args.server {
        Some(server) => {
            let client = client(args.ca_file.as_deref())?;
            remote(&client, server, args.token.as_deref(), &args.query).await?
        }
        None => {
            let tenant = args.tenant.clone().unwrap_or_default();
            let dir = tenant.data_dir(&args.data_dir);
            let config = QueryConfig::default();
            let reader = match &args.storage {
                Some(url) => {
                    let storage =
                        ObjectStorage::open(url, &args.data_dir, DEFAULT_CACHE_BYTES, config.timeout)?;
                    let live = crate::config::flight_live_reader(
                        args.token.clone(),
                        (args.ca_file.as_deref(), "--ca-file"),
                        (args.collector_cert_file.as_deref(), "--collector-cert-file"),
                        (args.collector_key_file.as_deref(), "--collector-key-file"),
                    )?;
                    StoreReader::with_storage(dir, &storage).with_live(&tenant, Arc::new(live))
                }
                None if !args.data_dir.exists() => bail!(
                    "data directory {} does not exist (pass --data-dir, or --server to ask a running weft)",
                    args.data_dir.display()
                ),
                None => StoreReader::new(dir),
            };
            let engine = QueryEngine::new(Arc::new(reader), config)?;
            let result = engine.sql(&args.query).await?;
            (result.schema, result.batches, result.truncated)
        }
    };
    let output = match args.format {
        OutputFormat::Table => format::table(&schema, &batches)?.into_bytes(),
        OutputFormat::Csv => format::csv(&schema, &batches)?,
        OutputFormat::Json => serde_json::to_vec(&format::json_objects(&batches)?)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output)?;
    if !output.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    if truncated {
        eprintln!("weft: the result was cut at the row limit");
    }
    Ok(())
}

/// The contents of `--ca-file`, if given.
fn ca_pem(ca_file: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    crate::config::read_optional_file(ca_file, "--ca-file")
}

/// An HTTP client that trusts the CA certificates in `ca_file` (for a weft
/// serving TLS with its own CA).
fn client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder();
    if let (Some(path), Some(pem)) = (ca_file, ca_pem(ca_file)?) {
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {} is not PEM", path.display()))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder.build()?)
}

async fn remote(
    client: &reqwest::Client,
    server: &str,
    token: Option<&str>,
    query: &str,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>, bool)> {
    let url = format!("{}/api/v1/sql", server.trim_end_matches('/'));
    let mut request = client.post(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .header(reqwest::header::ACCEPT, format::ARROW_STREAM)
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let truncated = response
        .headers()
        .get("x-weft-truncated")
        .is_some_and(|v| v == "true");
    let body = response
        .bytes()
        .await
        .with_context(|| format!("reading the answer of {url}"))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    let (schema, batches) =
        format::read_arrow_ipc(&body).context("the server's answer is not an Arrow IPC stream")?;
    Ok((schema, batches, truncated))
}
