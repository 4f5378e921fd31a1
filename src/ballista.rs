//! `weft ballista scheduler` and `weft ballista executor`: an Apache
//! DataFusion Ballista cluster for `weft query --ballista-scheduler`.
//!
//! They are Ballista's own scheduler and executor, started with weft's
//! codecs ([`weft_query::distributed`]) and a reader of the object store the
//! collectors write: the scheduler plans over the catalogs (and the running
//! collectors' unflushed rows), the executors fetch the segments they are
//! sent into their cache and read them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context};
use ballista_core::config::TaskSchedulingPolicy;
use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use clap::{Args, Subcommand};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use weft_query::distributed::{ClusterStore, WeftLogicalCodec, WeftPhysicalCodec};
use weft_store::StoreReader;

use crate::config::{Config, ServerArgs};
use crate::serve::ShutdownSignals;

#[derive(Debug, Args)]
pub struct BallistaArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Plan SQL from `weft query --ballista-scheduler` into stages for the executors.
    Scheduler(SchedulerArgs),
    /// Run the stages: fetch the segments they name from the object store and read them.
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
struct SchedulerArgs {
    /// Address queriers and executors connect to
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "ADDR")]
    bind: SocketAddr,
    /// Host name executors reach this scheduler at [default: the bind address, or this machine's name when that is 0.0.0.0]
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct ExecutorArgs {
    /// The scheduler, host:port
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
    scheduler: String,
    /// Address of this executor's Arrow Flight port (results and shuffles); port 0 picks a free one
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
    bind: SocketAddr,
    /// Port the scheduler sends tasks to; 0 picks a free one
    #[arg(long, default_value_t = 50052, value_name = "PORT")]
    grpc_port: u16,
    /// Host name the scheduler and queriers reach this executor at [default: the bind address, or this machine's name when that is 0.0.0.0]
    #[arg(long, value_name = "HOST")]
    external_host: Option<String>,
    /// Tasks run at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    concurrent_tasks: Option<usize>,
    #[command(flatten)]
    server: ServerArgs,
}

pub async fn run(args: BallistaArgs) -> anyhow::Result<()> {
    match args.role {
        Role::Scheduler(args) => scheduler(args).await,
        Role::Executor(args) => executor(args).await,
    }
}

/// The object store of `config`, one reader per tenant: the scheduler's
/// also asks the running collectors for their unflushed rows.
fn cluster_store(config: &Config, live: bool) -> anyhow::Result<Arc<ClusterStore>> {
    let Some(storage) = config.object_storage()? else {
        bail!("weft ballista needs --storage (store.storage): its processes read the segments the collectors keep in the object store");
    };
    let live = if live {
        Some(Arc::new(config.live_reader()?))
    } else {
        None
    };
    let root = config.data_dir.clone();
    let url = storage.url().to_string();
    Ok(ClusterStore::new(url, move |tenant| {
        let reader = StoreReader::with_storage(tenant.data_dir(&root), &storage);
        match &live {
            Some(live) => reader.with_live(tenant, live.clone()),
            None => reader,
        }
    }))
}

/// The name others reach a listener bound to `ip` at.
fn external_host(given: Option<String>, ip: IpAddr) -> String {
    given.unwrap_or_else(|| {
        if ip.is_unspecified() {
            crate::config::host_name().unwrap_or_else(|| "localhost".to_string())
        } else {
            ip.to_string()
        }
    })
}

async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let config = Config::resolve(&args.server)?;
    let store = cluster_store(&config, true)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {} for the Ballista scheduler", args.bind))?;
    let addr = listener.local_addr()?;
    let scheduler_config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: external_host(args.external_host, addr.ip()),
        scheduling_policy: TaskSchedulingPolicy::PushStaged,
        override_logical_codec: Some(Arc::new(WeftLogicalCodec::new(store.clone()))),
        override_physical_codec: Some(Arc::new(WeftPhysicalCodec::new(store))),
        ..SchedulerConfig::default()
    };
    let scheduler_config = Arc::new(scheduler_config);
    let cluster = BallistaCluster::new_from_config(&scheduler_config).await?;
    let server =
        create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, scheduler_config).await?;
    tracing::info!(scheduler = %addr, storage = config.store.storage.as_deref().unwrap_or_default(), "weft ballista scheduler listening");
    tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down");
            Ok(())
        }
        result = start_grpc_service_with_listener(listener, server) => {
            result.context("the Ballista scheduler failed")
        }
    }
}

/// The given ports, each 0 replaced by a free one: Ballista's executor binds
/// its ports itself and tells the scheduler the numbers it was given. The
/// free ones are held until all are chosen, so two zeros never get the same
/// port (which the executor then fails to bind twice).
fn free_ports<const N: usize>(ip: IpAddr, ports: [u16; N]) -> anyhow::Result<[u16; N]> {
    let mut held = Vec::new();
    let mut chosen = ports;
    for port in chosen.iter_mut().filter(|port| **port == 0) {
        let listener = std::net::TcpListener::bind((ip, 0))
            .with_context(|| format!("cannot find a free port on {ip}"))?;
        *port = listener.local_addr()?.port();
        held.push(listener);
    }
    Ok(chosen)
}

async fn executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&args.server)?;
    let store = cluster_store(&config, false)?;
    let Some((scheduler_host, scheduler_port)) = args
        .scheduler
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.to_string(), port.parse::<u16>().ok()?)))
    else {
        bail!(
            "--scheduler {:?} must be host:port, e.g. 127.0.0.1:50050",
            args.scheduler
        );
    };
    let ip = args.bind.ip();
    let [port, grpc_port] = free_ports(ip, [args.bind.port(), args.grpc_port])?;
    let work_dir = config.data_dir.join("ballista-work");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    let external = external_host(args.external_host, ip);
    let executor_config = ExecutorProcessConfig {
        bind_host: ip.to_string(),
        external_host: Some(external),
        port,
        grpc_port,
        scheduler_host,
        scheduler_port,
        task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
        vcores: args.concurrent_tasks.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        work_dir: Some(work_dir.to_string_lossy().into_owned()),
        override_logical_codec: Some(Arc::new(WeftLogicalCodec::new(store.clone()))),
        override_physical_codec: Some(Arc::new(WeftPhysicalCodec::new(store))),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(
        flight = %SocketAddr::new(ip, port),
        grpc = %SocketAddr::new(ip, grpc_port),
        scheduler = %args.scheduler,
        "weft ballista executor listening"
    );
    // Ballista's executor handles SIGTERM and Ctrl-C itself.
    start_executor_process(Arc::new(executor_config))
        .await
        .context("the Ballista executor failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_ports_become_distinct_free_ports_and_others_stay() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..200 {
            let [flight, grpc] = free_ports(ip, [0, 0]).unwrap();
            assert!(
                flight != 0 && grpc != 0 && flight != grpc,
                "{flight} and {grpc}"
            );
        }
        assert_eq!(free_ports(ip, [50051, 0]).unwrap()[0], 50051);
    }
}
