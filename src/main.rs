//! The `weft` binary: one command per role, wiring the crates together.

mod access;
mod ballista;
mod config;
mod demo;
mod gateway;
mod mesh;
mod serve;
mod sql;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

use crate::config::{Config, ServerArgs};

/// Every role allocates per request or per batch on several threads at once
/// (the gateway and sidecars per request, the collector per batch); glibc's
/// allocator spent an eighth of the gateway's CPU there, mimalloc a fraction
/// of that (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same in v2 and v3), which
/// libmimalloc-sys names no constant for.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc returns memory freed for a second (v3's default) to the OS. Under
/// sustained ingest the collector's conversions, on tokio's blocking threads,
/// grow their Arrow builders by reallocation into memory purged since the last
/// batch, and faulted every page back in zeroed: a sixth of the collector's
/// CPU went to page faults and `clear_page`. Ten seconds keeps the memory of a
/// busy process and still returns it after a burst (same RSS at peak; +6–12 %
/// records/s in `weft-bench-ingest`, BENCHMARKS.md). `MIMALLOC_PURGE_DELAY`
/// still decides when set.
fn keep_freed_memory_longer() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads on each purge.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

/// mimalloc asks for transparent huge pages on the memory it maps. The
/// collector frees and reuses its flush buffers continually, and every fault
/// on that memory zeroed a whole 2 MiB page: under the proxies' telemetry,
/// a fifth of `weft serve`'s CPU was `clear_page_erms` below
/// `do_huge_pmd_anonymous_page`. With 4 KiB pages the collector spent 20–23 %
/// less CPU per record there, and ingest and query benchmarks did not move
/// (BENCHMARKS.md). Only for the roles that ingest: the proxies keep their
/// memory and gain from huge pages. `MIMALLOC_ALLOW_THP` still decides when set.
fn no_transparent_huge_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory
        // of ours; it fails harmlessly where the kernel lacks it.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// weft: traces and logs in over OTLP, stored as Parquet with full-text indexes.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything on one machine: the OTLP collector and the query/API port.
    Serve(ServerArgs),
    /// Run only the OTLP collector (receivers and store writer; `/metrics` on the OTLP/HTTP port).
    Collector(ServerArgs),
    /// Run only the query API over a data directory a separate `weft collector` writes.
    Query(ServerArgs),
    /// Run a Ballista scheduler or executor for distributed SQL (`weft query --ballista-scheduler`).
    Ballista(ballista::BallistaArgs),
    /// Run one SQL query against a running weft (`--server`) or a data directory, and print the rows.
    Sql(sql::SqlArgs),
    /// Run the API gateway: routes, load balancing, health checks, plugins, a traced request each.
    Gateway(gateway::GatewayArgs),
    /// Run the service mesh's control plane or a sidecar (mTLS, permissions, a traced hop each).
    Mesh(mesh::MeshArgs),
    /// Create, list and revoke the tokens that may send or read data when auth is on.
    Token(access::TokenArgs),
    /// Add and remove the users who log in to the UI and API when auth is on.
    User(access::UserArgs),
    /// Run everything on one machine: weft, the CRM services behind the gateway and inside the mesh, live load, faults on demand.
    Demo(demo::DemoArgs),
}

fn main() -> anyhow::Result<()> {
    keep_freed_memory_longer();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Collector(_)) {
        no_transparent_huge_pages();
    }
    let instrumented_by_sdk = matches!(&cli.command, Command::Demo(demo) if demo.runs_a_service());
    if !instrumented_by_sdk {
        // The demo talks through its banner and progress line; its parts'
        // start-up and flush messages would only bury them.
        let quiet = matches!(&cli.command, Command::Demo(_));
        init_log(if quiet {
            "warn,weft::demo=info"
        } else {
            "info"
        });
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("weft")
            .build()
    };
    match cli.command {
        Command::Serve(args) => {
            runtime()?.block_on(serve::run(Config::resolve(&args)?, serve::Role::Serve))
        }
        Command::Collector(args) => {
            runtime()?.block_on(serve::run(Config::resolve(&args)?, serve::Role::Collector))
        }
        Command::Query(args) => runtime()?.block_on(serve::run_query(Config::resolve(&args)?)),
        Command::Sql(args) => runtime()?.block_on(sql::run(args)),
        Command::Ballista(args) => runtime()?.block_on(ballista::run(args)),
        Command::Gateway(args) => runtime()?.block_on(gateway::run(args)),
        Command::Mesh(args) => runtime()?.block_on(mesh::run(args)),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Token(args) => access::run_token(args),
        Command::User(args) => access::run_user(args),
    }
}

/// weft's own log: stderr, filtered by `WEFT_LOG` (else `default`).
fn init_log(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
