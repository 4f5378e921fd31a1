//! Asking running collectors for the rows they have not flushed yet, over
//! Arrow Flight: the querier's side of `weft_store::live`, which a
//! [`weft_store::StoreReader`] over an object store calls on each snapshot.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow_flight::decode::DecodedPayload;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, Ticket};
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use weft_store::live::{LiveHeader, LiveReader, LiveTail, LiveTicket};
use weft_store::StoreError;

/// A collector that does not accept a connection in this long counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Nor one that takes longer than this to send its unflushed rows.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Flight messages are ~2 MB; one row alone may be bigger.
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Reads collectors' unflushed rows with Flight `DoGet`, one HTTP/2
/// connection per collector kept between snapshots.
pub struct FlightLiveReader {
    /// The runtime the requests run on; [`LiveReader::read`] is called on
    /// blocking threads (snapshots are taken off the runtime's workers).
    runtime: tokio::runtime::Handle,
    /// Sent as `Bearer` authorization: the collectors' `read` role for the tenant.
    token: Option<String>,
    /// PEM CA certificates `https://` collectors are verified with, beside
    /// the system's roots.
    ca_pem: Option<Vec<u8>>,
    /// PEM certificate and key presented to collectors that require client
    /// certificates on their OTLP port.
    identity: Option<Identity>,
    /// By collector URL, with when each was last used: collectors come and
    /// go (a restart on another port is a new URL), so channels unused for
    /// [`CHANNEL_IDLE`] are dropped.
    channels: Mutex<HashMap<String, (Channel, Instant)>>,
}

/// How long a channel to a collector nobody asked is kept.
const CHANNEL_IDLE: Duration = Duration::from_secs(600);

impl FlightLiveReader {
    /// A reader whose requests run on the current Tokio runtime.
    pub fn new(token: Option<String>, ca_pem: Option<Vec<u8>>) -> Self {
        Self {
            runtime: tokio::runtime::Handle::current(),
            token,
            ca_pem,
            identity: None,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Presents the certificate `cert_pem` (then its chain), with its
    /// private key `key_pem`, to `https://` collectors.
    pub fn with_client_certificate(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.identity = Some(Identity::from_pem(cert_pem, key_pem));
        self
    }

    fn channel(&self, url: &str) -> Result<Channel, StoreError> {
        {
            let mut channels = self.channels.lock();
            let now = Instant::now();
            channels.retain(|_, (_, used)| now.duration_since(*used) < CHANNEL_IDLE);
            if let Some((channel, used)) = channels.get_mut(url) {
                *used = now;
                return Ok(channel.clone());
            }
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| StoreError::Live(format!("{url} is not a URL to reach: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = &self.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some(identity) = &self.identity {
                tls = tls.identity(identity.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| StoreError::Live(format!("{url}: {e}")))?;
        }
        // Connecting needs the runtime's reactor.
        let channel = {
            let _entered = self.runtime.enter();
            endpoint.connect_lazy()
        };
        self.channels
            .lock()
            .insert(url.to_string(), (channel.clone(), Instant::now()));
        Ok(channel)
    }
}

impl LiveReader for FlightLiveReader {
    fn read(&self, url: &str, ticket: &LiveTicket) -> Result<LiveTail, StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::Live(format!("{url}: {e}"));
        let schema = ticket.signal()?.schema();
        let mut client = FlightClient::new_from_inner(
            FlightServiceClient::new(self.channel(url)?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        );
        if let Some(token) = &self.token {
            client
                .add_header("authorization", &format!("Bearer {token}"))
                .map_err(|e| failed(&e))?;
        }
        let ticket = Ticket::new(serde_json::to_vec(ticket).map_err(|e| failed(&e))?);
        self.runtime.block_on(async move {
            let mut stream = client
                .do_get(ticket)
                .await
                .map_err(|e| failed(&e))?
                .into_inner();
            let mut header: Option<LiveHeader> = None;
            let mut batches = Vec::new();
            while let Some(data) = stream.next().await {
                let data = data.map_err(|e| failed(&e))?;
                match data.payload {
                    DecodedPayload::Schema(_) => {
                        header = Some(
                            serde_json::from_slice(&data.inner.app_metadata)
                                .map_err(|e| failed(&format!("its header: {e}")))?,
                        );
                    }
                    // The table's own schema, so the batches stack with
                    // the segments' rows whatever metadata the wire kept.
                    DecodedPayload::RecordBatch(batch) => {
                        batches.push(batch.with_schema(schema.clone()).map_err(|e| failed(&e))?)
                    }
                    DecodedPayload::None => {}
                }
            }
            let header = header.ok_or_else(|| failed(&"the answer has no header"))?;
            Ok(LiveTail { header, batches })
        })
    }
}
