//! The collector's unflushed rows for queriers on other machines, over Arrow
//! Flight on the OTLP/gRPC port (see `weft_store::live` for the protocol).
//!
//! `DoGet` with a [`LiveTicket`] (JSON) answers a stream whose first message
//! (the schema) carries the [`weft_store::live::LiveHeader`] as its
//! `app_metadata`, followed by the unflushed batches the ticket asks for.
//! Callers need the `read` role for the ticket's tenant; the other Flight
//! methods are not offered.

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};
use weft_access::grpc::Interceptor;
use weft_store::live::LiveTicket;
use weft_store::{TenantId, TenantStores};

/// The Flight service, ready to add to the OTLP/gRPC server; `auth` must
/// require the `read` role.
pub fn service(
    stores: Arc<TenantStores>,
    auth: Interceptor,
) -> InterceptedService<FlightServiceServer<LiveFlight>, Interceptor> {
    InterceptedService::new(FlightServiceServer::new(LiveFlight { stores }), auth)
}

pub struct LiveFlight {
    stores: Arc<TenantStores>,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

fn not_offered<T>(what: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "weft serves only DoGet of a collector's unflushed rows, not {what}"
    )))
}

#[tonic::async_trait]
impl FlightService for LiveFlight {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoExchangeStream = Stream<FlightData>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let caller = request
            .extensions()
            .get::<TenantId>()
            .cloned()
            .ok_or_else(|| Status::internal("the request was not authenticated to a tenant"))?;
        let ticket: LiveTicket = serde_json::from_slice(&request.get_ref().ticket)
            .map_err(|e| Status::invalid_argument(format!("the ticket is not a weft live ticket (JSON with table, tenant, run, next): {e}")))?;
        let signal = ticket
            .signal()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let tenant: TenantId =
            ticket
                .tenant
                .parse()
                .map_err(|e: weft_store::tenant::InvalidTenant| {
                    Status::invalid_argument(e.to_string())
                })?;
        if tenant != caller {
            return Err(Status::permission_denied(format!(
                "these credentials read tenant {caller}, not {tenant}"
            )));
        }
        let store = self
            .stores
            .get(&tenant)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let tail = store
            .table(signal)
            .live_tail(ticket.run.as_deref(), ticket.next);
        let header =
            serde_json::to_vec(&tail.header).map_err(|e| Status::internal(e.to_string()))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(signal.schema())
            .with_metadata(header.into())
            .build(futures::stream::iter(tail.batches.into_iter().map(Ok)))
            .map_err(|e: FlightError| Status::internal(e.to_string()));
        Ok(Response::new(stream.boxed()))
    }

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        not_offered("Handshake (send a token as Bearer authorization instead)")
    }

    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        not_offered("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        not_offered("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        not_offered("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        not_offered("GetSchema")
    }

    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        not_offered("DoPut (send OTLP)")
    }

    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        not_offered("DoExchange")
    }

    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        not_offered("DoAction")
    }

    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        not_offered("ListActions")
    }
}
