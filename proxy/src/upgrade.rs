//! HTTP/1.1 protocol switches (WebSockets) through a proxy hop: the request
//! keeps the headers that ask for the switch, which every other message
//! loses as hop-by-hop, and after a `101 Switching Protocols` the two
//! upgraded connections are joined byte for byte.

use http::{header, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// The protocol a request asks to switch to (`Upgrade: websocket`), if it does.
pub fn requested_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Asks the next hop for the switch again, after
/// [`crate::headers::remove_hop_by_hop`] took the headers out.
pub fn ask_again(headers: &mut HeaderMap, protocol: &HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol.clone());
}

/// Copies both ways between the caller's and the callee's upgraded
/// connections until either side closes.
pub async fn join(caller: OnUpgrade, callee: OnUpgrade) {
    let (caller, callee) = match (caller.await, callee.await) {
        (Ok(caller), Ok(callee)) => (caller, callee),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "a side of an upgraded connection never switched");
            return;
        }
    };
    let (mut caller, mut callee) = (TokioIo::new(caller), TokioIo::new(callee));
    if let Err(e) = tokio::io::copy_bidirectional(&mut caller, &mut callee).await {
        tracing::debug!(error = %e, "upgraded connection ended");
    }
}
