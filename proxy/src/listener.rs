//! The accept loop every proxy listener runs: accept until shutdown, hand
//! each connection over with a graceful-shutdown watcher, then give open
//! connections `grace` to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};

/// Accepts on `listener` until `shutdown`, calling `on_connection` with each
/// stream (`TCP_NODELAY` set) and a watcher its HTTP connection should be
/// served under; then waits up to `grace` for watched connections to end.
/// `what` names the listener in logs.
pub async fn accept_until(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    what: &'static str,
    mut on_connection: impl FnMut(TcpStream, SocketAddr, Watcher),
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        on_connection(stream, peer, graceful.watcher());
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            ?grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
}
